"""The leaderboard, model cards and claims table, built from synthetic records written with robust_mim.records."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robust_mim.reporting import leaderboard as lb
from robust_mim.cli import main
from robust_mim.records import make_record, write_record

PROFILE = "unit"
SCALE = "unit-test records: synthetic numbers"
PROV = {"git_commit": "abc123", "config_hash": "cfg1", "seed": 0, "versions": {"torch": "x"}, "device": "cpu",
        "wall_time_s": 0.1, "date": "2026-01-01T00:00:00+00:00"}
CHECKS = ("accuracy_non_increasing_in_eps", "more_steps_restarts_not_weaker", "white_box_strongest")


def _write(root: Path, model: str, folder: str, evaluation: str, rows: list[dict], n_ex: int = 100, **extra) -> Path:
    path = root / "records" / model / folder / f"{evaluation}.json"
    params = extra.pop("params", {"norm": "l2" if "l2" in evaluation else "linf"})
    write_record(path, make_record(model, evaluation, PROFILE, rows, n_examples=n_ex, params=params,
                                   provenance=PROV, scale_note=SCALE, **extra))
    return path


def _acc(eps: float, acc: float, n: int = 100) -> dict:
    return {"eps": eps, "accuracy": acc, "n_correct": round(acc * n), "n_examples": n}


def write_suite(root: Path, model: str, clean: float, pgd: dict[int, float], aa: float, l2: float,
                eot: float | None = None, failed: tuple[str, ...] = (), method: str = "standard",
                papers: tuple[str, ...] = ("overview",)) -> None:
    """The shared suite of rule attack_eval for one model (pgd-linf, AutoAttack-style, PGD L2, [EOT], sanity)."""
    checks = [{"check": c, "passed": c not in failed, "details": {}} for c in CHECKS]
    shared = {"paper": list(papers), "method": method, "init": None, "sanity_checks": checks}
    _write(root, model, "robustness", "pgd-linf", [_acc(0.0, clean)] + [_acc(e / 255, a) for e, a in pgd.items()],
           attack="pgd", threat_model="white-box", **shared)
    info = {"components": ["apgd-ce", "apgd-dlr-targeted", "square"], "attack": "APGD-CE + APGD-DLR-T + Square (ART)"}
    _write(root, model, "robustness", "autoattack-style-linf", [{**_acc(8 / 255, aa), "attack_info": info}],
           attack="autoattack-style", threat_model="white-box", **shared)
    _write(root, model, "robustness", "pgd-l2", [_acc(0.0, clean), _acc(0.5, l2)], attack="pgd",
           threat_model="white-box", **shared)
    if eot is not None:
        _write(root, model, "robustness", "pgd-linf-eot", [_acc(0.0, clean), _acc(8 / 255, eot)], attack="pgd",
               threat_model="white-box", defense={"name": "de3", "sigma_255": 50}, **shared)
    _write(root, model, "robustness", "sanity", checks, attack=None, **shared)


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """results/<profile> with three classifiers, plus records that are not classifiers of their own."""
    res = tmp_path / "results" / PROFILE
    write_suite(res, "alpha", 0.90, {4: 0.50, 8: 0.30}, aa=0.25, l2=0.40)
    write_suite(res, "beta", 0.70, {4: 0.60, 8: 0.55}, aa=0.50, l2=0.60, eot=0.20, failed=("white_box_strongest",))
    write_suite(res, "gamma", 0.95, {4: 0.10, 8: 0.00}, aa=0.00, l2=0.05)
    _write(res, "gamma", "certify", "certify", [
        {"radius": 0.25, "certified_accuracy": 0.42, "within_max_radius": True},
        {"radius": 0.5, "certified_accuracy": 0.31, "within_max_radius": False}], paper=["dmae"], method="gaussian",
        init=None, pretrain_objective=None, sigma=0.25, n0=10, n=50, alpha=0.001, n_images=100, max_radius=0.28,
        certification_note="N = 50", empirical_check={"summary": [], "rows": []}, sanity_checks=[])
    _write(res, "alpha", "corruption", "corruption", [{"corruption": "fog", "severity": 1, "error": 0.3,
                                                       "n_examples": 100}], mean_corruption_error=0.3, clean_error=0.1,
           paper=["dat"])
    _write(res, "ens-ab", "chen", "chen-pgd-linf", [_acc(0.0, 0.8), _acc(8 / 255, 0.1)], paper=["chen"],  # ensemble
           headline_eps=8 / 255, chen_kind="ensemble", chen_task="rotation+rotation", chen_pretraining="P3",
           chen_finetuning="mixed", attack_steps=5, attack_step_255=2, members="alpha,beta")
    _write(res, "pretext-run", "pretext", "pretext", [{"task": "rotation", "accuracy": 0.5, "eps": 8 / 255}])
    return res


def board_of(results: Path, **kw) -> pd.DataFrame:
    return lb.leaderboard(lb.load_leaderboard_records(results, PROFILE), **kw)


def test_exactly_one_row_per_trained_classifier(results):
    board = board_of(results)
    assert list(board.index) == ["alpha", "beta", "gamma"]  # no ensemble, no pretext run, no duplicates
    assert board.loc["beta", "clean (%)"] == pytest.approx(70.0)
    assert board.loc["alpha", "PGD L∞ 4/255 (%)"] == pytest.approx(50.0)
    assert board.loc["alpha", "APGD-CE + APGD-DLR-T + Square (ART) 8/255 (%)"] == pytest.approx(25.0)
    assert board.loc["beta", "PGD L2 0.5 (%)"] == pytest.approx(60.0)


def test_robust_worst_is_the_lowest_attack_and_adaptive_only_where_run(results):
    board = board_of(results)
    # beta: PGD 55, AutoAttack-style 50, EOT 20 at 8/255 -> the EOT attack decides
    assert board.loc["beta", "robust accuracy (worst case) 8/255 (%)"] == pytest.approx(20.0)
    assert board.loc["beta", "worst attack"] == "pgd-linf-eot"
    assert board.loc["beta", "adaptive (worst) 8/255 (%)"] == pytest.approx(20.0)
    assert board.loc["alpha", "robust accuracy (worst case) 8/255 (%)"] == pytest.approx(25.0)  # AutoAttack < PGD 30
    assert pd.isna(board.loc["alpha", "adaptive (worst) 8/255 (%)"])


def test_certified_and_corruption_columns_only_where_measured(results):
    board = board_of(results)
    assert board.loc["gamma", "certified r=0.25 (%)"] == pytest.approx(42.0)
    assert pd.isna(board.loc["gamma", "certified r=0.5 (%)"])  # beyond the radius N allows: not a 0
    assert pd.isna(board.loc["alpha", "certified r=0.25 (%)"])
    assert board.loc["alpha", "corruption error, unnormalised (%)"] == pytest.approx(30.0)
    assert pd.isna(board.loc["beta", "corruption error, unnormalised (%)"])


def test_failed_sanity_check_is_visibly_flagged(results):
    board = board_of(results)
    assert board.loc["beta", lb.FLAG] == "white_box_strongest"
    assert board.loc["alpha", lb.FLAG] == "" and board.loc["gamma", lb.FLAG] == ""
    page = lb.sortable_html(board)
    row = next(r for r in page.split("<tr>") if r.startswith("<td>beta</td>"))
    assert "white_box_strongest" in row and '<td class="warn">' in row  # highlighted in the table
    assert "td.warn{background:#f8d7da" in page
    assert "#f8d7da" not in next(r for r in page.split("<tr>") if r.startswith("<td>alpha</td>"))
    assert "<script>" in page and 'id="leaderboard"' in page


def test_pareto_front_and_models_filter(results):
    board = board_of(results)
    front = lb.pareto_front(board["clean (%)"], board[lb.robust_column(board)])
    # alpha (90, 25) and gamma (95, 0) trade off; beta (70, 20) is dominated by alpha
    assert front.to_dict() == {"alpha": True, "beta": False, "gamma": True}
    assert list(board_of(results, models=["gamma", "alpha"]).index) == ["alpha", "gamma"]


def test_training_cost_sums_upstream_and_finetune_jobs():
    bench = pd.DataFrame([
        {"rule": "pretrain_mim", "job": "mae", "wall_s": 10.0, "cpu_s": 8.0, "max_rss_mb": 100.0},
        {"rule": "finetune_classifier", "job": "alpha", "wall_s": 5.0, "cpu_s": 4.0, "max_rss_mb": 300.0},
        {"rule": "attack_eval", "job": "alpha", "wall_s": 99.0, "cpu_s": 99.0, "max_rss_mb": 999.0},
        {"rule": "train_vq", "job": "vq1", "wall_s": 2.0, "cpu_s": 1.0, "max_rss_mb": 50.0}])
    cost = lb.training_cost(bench, {"alpha": ["mae"], "beta": ["vq1"]}, {"mae": 2})
    assert cost.loc["alpha", "train wall (s)"] == 15.0 and cost.loc["alpha", "train CPU (s)"] == 12.0
    assert cost.loc["alpha", "train GPU (s)"] == 20.0  # 10 s on 2 GPU processes; the CPU fine-tuning adds none
    assert cost.loc["alpha", "peak RSS (MB)"] == 300.0  # the attack job is not training
    assert cost.loc["beta", "train wall (s)"] == 2.0 and pd.isna(cost.loc["beta", "train GPU (s)"])


def _spec(models: list[str]) -> str:
    settings = {m: {"run": {"method": {"name": "standard"}, "papers": ["overview"], "init": "mae"},
                    "upstream": {"mae": {"objective": {"name": "mae"}}}} for m in models}
    return json.dumps({"profile": PROFILE, "scale_note": SCALE, "seed": 0, "device": "cpu",
                       "data": {"name": "digits", "image_size": 16}, "model": {"arch": "vit_nano_patch4_16"},
                       "models": settings, "headline_eps_255": 8})


def test_model_cards_one_per_model_with_numbers_provenance_and_cost(results, tmp_path):
    benchmarks = (("pretrain_mim", "mae", "12.5\t0:00:12\t100\t11"), ("finetune_classifier", "beta", "3\t0:00:03\t90\t2"))
    for rule, job, line in benchmarks:
        (results / "benchmarks" / rule).mkdir(parents=True)
        (results / "benchmarks" / rule / f"{job}.tsv").write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{line}\n")
    (results / "finetune" / "beta").mkdir(parents=True)
    (results / "finetune" / "beta" / "model.safetensors").write_bytes(b"weights")
    out = tmp_path / "cards"
    assert main(["model-cards", "--spec", _spec(["alpha", "beta", "gamma"]), "--results-dir", str(results),
                 "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alpha.json", "beta.json", "gamma.json"]  # no temp files left
    card = json.loads((out / "beta.json").read_text())
    board = board_of(results)
    assert card["model_id"] == "beta" and card["clean_acc"] == pytest.approx(board.loc["beta", "clean (%)"])
    assert isinstance(card["robust_acc_worst"], float) and card["robust_acc_worst"] == pytest.approx(20.0)
    assert card["autoattack"] == "APGD-CE + APGD-DLR-T + Square (ART)" and card["eps_255"] == 8
    assert card["failed_sanity_checks"] == ["white_box_strongest"]
    assert card["training"]["cost"]["wall_s"] == pytest.approx(15.5) and card["training"]["upstream"]
    assert len(card["checkpoint"]["sha256"]) == 64 and card["provenance"]["git_commits"] == ["abc123"]
    assert {e["evaluation"] for e in card["evaluations"]} >= {"pgd-linf", "sanity", "pgd-linf-eot"}
    assert main(["model-cards", "--spec", _spec(["alpha", "delta"]), "--results-dir", str(results),
                 "--out-dir", str(tmp_path / "c2")]) == 2  # a configured model without records: one-line error


def _write_dat(results: Path, dat_error: float, std_error: float) -> None:
    """Corruption records of a DAT model and its standard-training reference (paper 5's headline claim)."""
    for model, method, err in (("dat-m", "dat", dat_error), ("std-m", "standard", std_error)):
        rows = [{"corruption": c, "severity": 1, "error": err, "n_examples": 200} for c in ("fog", "snow")]
        _write(results, model, "corruption", "corruption", rows, n_ex=200, paper=["dat"], method=method, init=None,
               mCE=err, clean_error=err / 2)


def _claims(results: Path) -> list[str]:
    out = results / "claims.md"
    spec = json.dumps({"profile": PROFILE, "notebooks": ["05_dat"]})
    assert main(["claims", "--spec", spec, "--results-root", str(results.parent), "--out", str(out)]) == 0
    return out.read_text().splitlines()


def _headline(lines: list[str]) -> dict[str, str]:
    """Rows of the first (headline) table of claims.md by paper title."""
    start = lines.index(next(ln for ln in lines if ln.startswith("| paper |"))) + 2
    rows = lines[start:lines.index("", start)]
    return {r.split(" | ")[0].lstrip("| "): r for r in rows}


def test_claims_table_regenerates_from_records_and_follows_a_changed_record(results):
    shutil.rmtree(results / "records" / "ens-ab")  # a partial chen record; chen's claims are tested in its own files
    write_suite(results, "dat-m", 0.8, {4: 0.3, 8: 0.1}, aa=0.1, l2=0.2, papers=("dat",), method="dat")
    write_suite(results, "std-m", 0.8, {4: 0.3, 8: 0.1}, aa=0.1, l2=0.2, papers=("dat",))
    _write_dat(results, dat_error=0.2, std_error=0.6)
    first = _claims(results)
    rows = _headline(first)
    assert len(rows) == 5 and [k.split(" ")[0] for k in rows] == ["NIM", "MIMIR", "DMAE", "Chen", "DAT"]
    dat = next(v for k, v in rows.items() if k.startswith("DAT"))
    assert "**held**" in dat and "[executed](html/05_dat.html)" in dat
    nim = next(v for k, v in rows.items() if k.startswith("NIM"))
    assert "**not run at this scale**" in nim and "executed" not in nim  # no records; notebook not run
    assert _claims(results)[3:] == first[3:]  # regenerated from the same records: the same file below the date line
    _write_dat(results, dat_error=0.6, std_error=0.2)  # a record changes ...
    dat2 = next(v for k, v in _headline(_claims(results)).items() if k.startswith("DAT"))
    assert "**not held**" in dat2 and dat2 != dat  # ... and so does the table


def test_leaderboard_is_sorted_by_robust_accuracy_and_its_page_is_styled_and_sortable(results, tmp_path):
    write_suite(results, "delta", 0.60, {4: 0.58, 8: 0.57}, aa=0.56, l2=0.50)  # the most robust, sorts first by id last
    board = board_of(results)
    robust = board[lb.robust_column(board)]
    assert board.index[0] == "delta" and list(robust.dropna()) == sorted(robust.dropna(), reverse=True)
    page = lb.save_leaderboard(board, tmp_path / "figs").read_text()
    assert "<style>" in page and "th[data-dir=desc]::after" in page and "onclick" in page  # styled, sortable
    assert "<link" not in page and "src=" not in page  # no external assets
    head = page[page.index("<thead>"):page.index("</thead>")]
    assert f"<th data-dir=desc>{lb.robust_column(board)}" in head.replace("&#x27;", "'")  # the current sort is marked
    assert page.index("<td>delta</td>") < page.index("<td>alpha</td>")


def test_scatter_numbers_every_point_and_names_them_in_a_key_outside_the_axes(results):
    board = board_of(results)
    fig = lb.plot_pareto(board, "t")
    ax = fig.axes[0]
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    key = next(t for t in ax.texts if "alpha" in t.get_text())
    assert sorted(int(t.get_text()) for t in numbers) == list(range(1, len(numbers) + 1))
    assert key.get_position()[0] > 1.0  # right of the data, in axes coordinates
    assert all(m in key.get_text() for m in board.index)
