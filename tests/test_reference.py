"""Committed reference records: export keeps only small readable files, render needs no training, and the
README's claims table and reference/claims.md are what the committed records say."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from robust_mim.reporting import reference as ref

REPO = Path(__file__).resolve().parents[1]


def _record(profile: str = "p", dirty: bool = False, model: str = "m") -> dict:
    return {"schema_version": 1, "model_id": model, "evaluation": "attack", "profile": profile, "rows": [],
            "n_examples": 10, "params": {}, "paper": "mimir", "scale_note": "tiny",
            "provenance": {"git_commit": "a" * 40, "git_dirty": dirty, "config_hash": "c", "seed": 0,
                           "versions": {"torch": "2.14.1", "python": "3.11"}, "device": "cpu",
                           "device_name": "Some CPU (2 logical cores)", "host": "h", "wall_time_s": 1.0, "date": "d"}}


def _fake_run(root: Path, records: list[dict]) -> Path:
    run = root / "results" / "p"
    for i, r in enumerate(records):
        path = run / "records" / r["model_id"] / f"r{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    (run / "finetune" / "m").mkdir(parents=True)
    (run / "finetune" / "m" / "model.safetensors").write_bytes(b"weights")
    (run / "finetune" / "m" / "checkpoint.pt").write_bytes(b"weights")
    (run / "finetune" / "m" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n')
    (run / "pretrain" / "busy").mkdir(parents=True)  # a training job still running: no weights yet
    (run / "pretrain" / "busy" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.9}\n')
    (run / "logs" / "x").mkdir(parents=True)
    (run / "logs" / "x" / "m.log").write_text("log")
    (run / "notebooks").mkdir()
    (run / "notebooks" / "a.json").write_text("{}")
    (run / "benchmarks" / "finetune_classifier").mkdir(parents=True)
    (run / "benchmarks" / "finetune_classifier" / "m.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tcpu_time\n125.5\t0:02:05\t900.2\t3000\t120.0\n")
    return run


def test_export_keeps_records_logs_of_training_and_wall_times_but_no_weights(tmp_path):
    run = _fake_run(tmp_path, [_record()])
    m = ref.export_reference(run, tmp_path / "reference", notebooks=["02_mimir"])
    out = tmp_path / "reference" / "p"
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == ["MANIFEST.json", "README.md", "benchmarks/finetune_classifier/m.tsv",
                    "finetune/m/metrics.jsonl", "records/m/r0.json"]  # not pretrain/busy: still training
    assert m["files"]["records/m/r0.json"] == hashlib.sha256((run / "records/m/r0.json").read_bytes()).hexdigest()
    assert m["rule_wall_times"] == [{"rule": "finetune_classifier", "job": "m", "wall_s": 125.5, "cpu_s": 120.0,
                                     "max_rss_mb": 900.2}]
    assert m["devices"] == ["cpu: Some CPU (2 logical cores)"] and m["papers_with_records"] == ["mimir"]
    readme = (out / "README.md").read_text()
    assert "| finetune_classifier | m | 2.1 | 2.0 | 900 |" in readme and "Some CPU" in readme
    assert json.loads((out / "MANIFEST.json").read_text())["notebooks"] == ["02_mimir"]


def test_export_replaces_an_older_reference_and_refuses_uncommitted_or_mixed_records(tmp_path):
    out = tmp_path / "reference" / "p"
    out.mkdir(parents=True)
    (out / "stale.json").write_text("{}")
    ref.export_reference(_fake_run(tmp_path / "a", [_record()]), tmp_path / "reference")
    assert not (out / "stale.json").exists()
    with pytest.raises(ref.ReferenceError, match="uncommitted code"):
        ref.export_reference(_fake_run(tmp_path / "b", [_record(dirty=True)]), tmp_path / "reference")
    with pytest.raises(ref.ReferenceError, match="several profiles"):
        ref.export_reference(_fake_run(tmp_path / "c", [_record("p"), _record("q", model="n")]), tmp_path / "reference")
    assert (out / "records").is_dir()  # a refused export leaves the last good reference in place


def test_a_training_job_resumed_after_a_kill_has_its_cpu_time_scaled_to_all_its_epochs(tmp_path):
    """Snakemake benchmarks the last run only: resumed after epoch 1 of 3, 120 CPU-s are 2 of 3 epochs."""
    run = _fake_run(tmp_path, [_record()])
    (run / "logs" / "finetune_classifier").mkdir(parents=True)
    (run / "logs" / "finetune_classifier" / "m.log").write_text(
        "[1] epoch=1 loss=2\n[2] resumed from run/checkpoint.pt after epoch 1\n[3] epoch=2 loss=1\n[4] epoch=3 loss=0\n")
    m = ref.export_reference(run, tmp_path / "reference")
    assert m["rule_wall_times"][0] == {"rule": "finetune_classifier", "job": "m", "wall_s": 125.5, "cpu_s": 120.0,
                                       "max_rss_mb": 900.2, "resumed_after_epoch": 1, "epochs": 3,
                                       "cpu_s_all_epochs": 180.0}
    assert "| m (resumed after epoch 1 of 3: times of the last run; all epochs ≈ 3.0 CPU-min) |" in \
        (tmp_path / "reference" / "p" / "README.md").read_text()
    assert ref.resumed_epochs(run / "logs" / "x" / "m.log") is None and ref.resumed_epochs(tmp_path / "no.log") is None


def test_export_leaves_out_what_a_running_job_is_writing(tmp_path):
    """Outputs Snakemake marks incomplete (a job still running or killed) are neither copied nor counted."""
    import base64

    run = _fake_run(tmp_path, [_record(), _record(model="busy")])  # records/busy/r1.json: being written
    marks = tmp_path / ".snakemake" / "incomplete"
    marks.mkdir(parents=True)
    (marks / base64.urlsafe_b64encode(b"results/p/records/busy").decode()).write_text("")
    m = ref.export_reference(run, tmp_path / "reference")
    assert m["records"] == 1 and not (tmp_path / "reference" / "p" / "records" / "busy").exists()
    assert ref.running_outputs(run) == [(run / "records" / "busy").resolve()]


def test_chain_costs_follow_the_dependency_path_and_count_a_chain_only_once_it_reached_its_notebook():
    recs = [_record(model="m") | {"init": "pre"}, _record(model="s"), _record(model="c") | {"paper": ["dmae"]},
            _record(model="x") | {"paper": ["nim"]}]
    minutes = {("pretrain_mim", "pre"): 10, ("finetune_classifier", "m"): 20, ("attack_eval", "m"): 5,
               ("attack_adaptive", "m"): 8, ("finetune_classifier", "s"): 40, ("attack_eval", "s"): 4,
               ("notebook_run", "02_mimir"): 1, ("finetune_classifier", "c"): 5,
               ("certify_smoothed", "c-sigma0.25"): 50, ("notebook_run", "03_dmae_certified"): 1,
               ("finetune_classifier", "x"): 7}  # nim's notebook has not run: no nim chain
    walls = [{"rule": r, "job": j, "wall_s": 120 * c, "cpu_s": 60 * c} for (r, j), c in minutes.items()]
    chains = {c["paper"]: c for c in ref.chain_costs(recs, walls)}
    assert set(chains) == {"mimir", "dmae"}
    # mimir: 88 CPU-min; paths m 10 + 20 + 8 = 38, s 40 + 4 = 44, + notebook 1 = 45 > 88 / 2
    assert chains["mimir"] == {"paper": "mimir", "jobs": 7, "cpu_min": 88.0, "path_min": 45.0,
                               "estimated_wall_min": 45.0}
    assert chains["dmae"]["path_min"] == 56.0 and chains["dmae"]["jobs"] == 3  # c-sigma0.25 is c's job
    text = "\n".join(ref.chains_section(list(chains.values())))
    assert "| mimir | 7 | 88.0 | 45.0 | 45.0 |" in text and ref.chains_section([]) == []
    # the whole run: every job once (nim's unfinished chain too), the longest chain's path
    total = ref.profile_cost(walls, list(chains.values()))
    assert total == {"jobs": 11, "cpu_min": 151.0, "path_min": 56.0, "estimated_wall_min": 75.5}
    assert "| every exported job, each once | 11 | 151.0 | 56.0 | 75.5 |" in "\n".join(
        ref.chains_section(list(chains.values()), total))
    assert ref.profile_cost(walls, []) is None


def test_readme_block_is_replaced_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ref.README_BEGIN}\nold\n{ref.README_END}\noutro\n")
    ref.write_readme_block(readme, f"{ref.README_BEGIN}\nnew\n{ref.README_END}")
    assert readme.read_text() == f"intro\n{ref.README_BEGIN}\nnew\n{ref.README_END}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(ref.ReferenceError, match="markers"):
        ref.write_readme_block(readme, "x")


def test_render_runs_notebooks_and_claims_from_exported_records_alone(pipeline, tmp_path):
    """The test profile's finished run, exported (no weights), renders a notebook and the claims."""
    m = ref.export_reference(pipeline / "results" / "test", tmp_path / "reference",
                             notebooks=["00_overview", "02_mimir"], allow_dirty=True)  # a working tree's run
    assert not list((tmp_path / "reference").rglob("*.safetensors"))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{ref.README_BEGIN}\n{ref.README_END}\n")
    status = ref.render(tmp_path / "reference", tmp_path / "rendered", readme, repo=REPO, log=lambda *_: None)
    assert status == {"test": {"00_overview": "rendered", "02_mimir": "rendered"}}
    assert (tmp_path / "rendered" / "test" / "html" / "02_mimir.html").stat().st_size > 10_000
    assert list((tmp_path / "rendered" / "test" / "figures" / "02_mimir").glob("*.png"))
    block = readme.read_text()
    assert block.count("\n| [") == len(ref.judged_profiles(tmp_path / "reference", ["test"])["test"])
    assert f"code {m['git_commits'][0][:12]}" in block
    claims = (tmp_path / "reference" / "claims.md").read_text()
    assert "| status — test |" in claims and "../robust_mim/papers/mimir/deviations.py" in claims


# ----------------------------------------------------------------------------- the committed reference


def committed_profiles() -> list[str]:
    return ref.reference_profiles(REPO / "reference")


def test_committed_reference_files_are_the_manifests_small_files():
    profiles = committed_profiles()
    assert "smoke" in profiles and "cifar10-cpu" in profiles
    for p in profiles:
        folder = REPO / "reference" / p
        m = ref.manifest(REPO / "reference", p)
        on_disk = {str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file()}
        on_disk -= {"MANIFEST.json", "README.md"}
        assert on_disk == set(m["files"]), p
        for rel, sha in m["files"].items():
            data = (folder / rel).read_bytes()
            assert len(data) <= ref.MAX_FILE_BYTES and hashlib.sha256(data).hexdigest() == sha, rel
        assert m["devices"] and all("not recorded" not in d for d in m["devices"] if p != "smoke")


def test_readme_claims_table_and_reference_claims_are_generated_from_the_committed_records(monkeypatch):
    monkeypatch.chdir(REPO)  # as `make reference` runs: messages name reference/... relative to the root
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index(ref.README_BEGIN):readme.index(ref.README_END) + len(ref.README_END)]
    assert block == ref.readme_claims_block(Path("reference")), "run `make reference` (the README is stale)"
    assert (REPO / "reference" / "claims.md").read_text() == ref.claims_text(Path("reference"))
    for link in re.findall(r"\]\((\.\./[^)#]+)\)", (REPO / "reference" / "claims.md").read_text()):
        assert (REPO / "reference" / link).resolve().exists(), link


def test_a_headline_not_run_shows_the_first_claim_run_beside_it_never_in_its_place():
    import pandas as pd

    rows = pd.DataFrame([
        {"claim": "selfie-like: P3 beats P1", "ours": "no selfie-like model", "status": "not run at this scale"},
        {"claim": "rotation: P3 beats P1", "ours": "40 vs 30", "status": "held"}])
    ours, verdict = ref.headline_cells(rows)
    assert ours.startswith("selfie-like: P3 beats P1: no selfie-like model — closest claim run here: rotation")
    assert verdict == "**not run at this scale** (closest: **held**)"
    assert ref.headline_cells(rows.iloc[1:]) == ["rotation: P3 beats P1: 40 vs 30", "**held**"]


def _notebook(path: Path, source: str) -> Path:
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "profile = 'p'",
              "outputs": [], "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def test_a_notebook_missing_reference_inputs_is_skipped_by_its_error_type_and_any_other_error_fails(tmp_path):
    """The skip is typed (the executed notebook's exception name), not a match on stderr text."""
    missing = ("from robust_mim.notebook import show_errors_in_one_line\n"
               "from robust_mim.reporting.records import RecordsMissing\n"
               "show_errors_in_one_line()\nraise RecordsMissing('no model cards under x')")
    other = "raise ValueError('no such column: robust_mim: error: no x')"
    run = {name: ref.execute_notebook(_notebook(tmp_path / f"{name}.ipynb", src), tmp_path / "out" / f"{name}.ipynb",
                                      {"profile": "p"}, REPO, tmp_path / "html")
           for name, src in {"missing": missing, "other": other, "fine": "x = 1"}.items()}
    assert run["missing"] == "skipped: RecordsMissing: no model cards under x"
    assert run["other"].startswith("failed: ValueError: no such column")
    assert run["fine"] == "rendered" and (tmp_path / "html" / "fine.html").is_file()
