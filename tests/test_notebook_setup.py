"""Notebook set-up: paths found from any working directory, the profile of the records checked,
parameters asking for values never run refused in one line, rerun figures kept apart."""
import pandas as pd
import pytest

from conftest import REPO
from robust_mim.notebook import ParameterError, notebook_dirs, notebook_parameters, project_root, require_values
from robust_mim.records import make_record, provenance, write_record
from robust_mim.reporting.records import ProfileMismatch, RecordsMissing, load_records


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A folder laid out as the repository (Snakefile, robust_mim/, notebooks/) with results/test records."""
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "robust_mim").mkdir()
    (tmp_path / "notebooks").mkdir()
    rows = [{"eps": e / 255, "accuracy": 0.5} for e in (0, 8)]
    write_record(tmp_path / "results" / "test" / "records" / "m" / "pgd-linf.json",
                 make_record("m", "pgd-linf", "test", rows, n_examples=4, params={},
                             provenance=provenance({}, 0, "cpu", 0.0)))
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path


def test_relative_dirs_resolve_against_the_repository_root_from_notebooks(checkout):
    assert project_root() == checkout.resolve()
    results, figures = notebook_dirs("test", "results/test", "figures/test/00_overview", "00_overview")
    assert results == checkout.resolve() / "results" / "test"
    assert figures == checkout.resolve() / "figures" / "test" / "00_overview"
    assert set(load_records("results/test", "test")["model_id"]) == {"m"}


def test_a_working_directory_that_holds_the_results_wins(checkout, monkeypatch):
    """The pipeline runs notebooks in its working directory, which may lie inside a checkout."""
    work = checkout / "notebooks" / "work"
    (work / "results" / "test").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert notebook_dirs("test", "results/test", "figures/x", "00_overview") == \
        (work / "results" / "test", work / "figures" / "x")


def test_a_manual_run_writes_figures_apart_from_the_pipelines(checkout, capsys):
    _, figures = notebook_dirs("test", "results/test", None, "02_mimir")
    assert figures == checkout.resolve() / "figures" / "test" / "reruns" / "02_mimir"
    assert "pass -p figures_dir" in capsys.readouterr().out


def test_records_of_another_profile_are_one_line_not_shown_under_the_wrong_label(checkout):
    with pytest.raises(ProfileMismatch) as err:
        load_records("results/test", "smoke")
    assert str(err.value) == (f"records in {checkout.resolve() / 'results' / 'test'} are of profile 'test', "
                              "not 'smoke': pass -p results_dir results/smoke (or -p profile test)")
    assert isinstance(err.value, RecordsMissing)  # claims.md marks such a profile 'not yet run'


def test_a_value_never_run_names_the_values_that_were():
    df = pd.DataFrame({"evaluation": ["pgd-linf", "pgd-linf", "sanity", "pgd-l2"],
                       "eps": [0, 8 / 255, 64 / 255, 0.5]})
    require_values(df, "eps", 255, evaluations=["pgd-linf"], eps_255=[0, 8])
    with pytest.raises(ParameterError, match=r"^eps_255 = 4 was never run: the records hold eps_255 = 0, 8 only"):
        require_values(df, "eps", 255, evaluations=["pgd-linf"], eps_255=[4, 8])
    with pytest.raises(ParameterError, match="eps_255 = 64 was never run"):  # sanity rows are no attack
        require_values(df, "eps", 255, eps_255=64)
    require_values(df, "radius", if_any=True, radii=[0.25])  # no certification at all: column left empty
    with pytest.raises(ParameterError, match="radii = 0.25 was never run: the records hold radii = nothing"):
        require_values(df, "radius", radii=[0.25])


# ----------------------------------------------------------------------------- the headline ε flows from the profile


def _parameters_cell(path) -> dict:
    """name -> value of every assignment in a notebook's parameters cell."""
    import ast
    import json

    cells = json.loads(path.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    return {t.id: ast.literal_eval(node.value) for node in ast.parse(source).body for t in node.targets}


def test_notebooks_read_the_headline_eps_from_the_profile_never_a_default_of_their_own():
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    takes = {p.stem for p in paths if "headline_eps_255" in notebook_parameters(p)}
    assert {"00_overview", "01_nim_de3", "02_mimir", "05_dat", "06_leaderboard"} <= takes
    for path in paths:
        cell = _parameters_cell(path)
        assert list(cell) == notebook_parameters(path), path.name
        assert cell.get("headline_eps_255") is None, f"{path.name} hard-codes the headline ε"


def _notebook_flags(values: dict):
    """rules/common.smk's `notebook_flags` (used by rule notebook_run), with ``values`` as the profile's values."""
    import re
    import shlex

    source = (REPO / "rules" / "common.smk").read_text()
    namespace = {"shlex": shlex, "notebook_parameters": notebook_parameters, "NOTEBOOK_PROFILE_VALUES": values}
    exec(re.search(r"def notebook_flags.*?(?=\n\n\n)", source, re.S).group(0), namespace)
    return namespace["notebook_flags"]


def test_the_rule_passes_the_profiles_headline_eps_only_to_notebooks_that_take_it():
    flags = _notebook_flags({"headline_eps_255": 4})
    assert flags(REPO / "notebooks" / "02_mimir.ipynb") == "-p headline_eps_255 4"
    assert flags(REPO / "notebooks" / "03_dmae_certified.ipynb") == ""  # no such parameter: papermill would warn


def _write(root, model, evaluation, eps_255):
    rows = [{"eps": e / 255, "accuracy": 0.5} for e in eps_255]
    write_record(root / "results" / "test" / "records" / model / f"{evaluation}.json",
                 make_record(model, evaluation, "test", rows, n_examples=4, params={},
                             provenance=provenance({}, 0, "cpu", 0.0)))


def test_a_manual_run_reads_the_headline_eps_from_the_records(checkout):
    from robust_mim.reporting.claims import profile_headline_eps_255

    with pytest.raises(RecordsMissing, match="no AutoAttack or strong-PGD record states the headline ε"):
        profile_headline_eps_255(checkout / "results" / "test", "test")  # only pgd-linf: no 8.0 made up
    _write(checkout, "m", "pgd-linf-strong", [4])  # the strong PGD runs at the headline ε only
    assert profile_headline_eps_255(checkout / "results" / "test", "test") == 4
    _write(checkout, "m", "autoattack-linf", [2])  # AutoAttack's ε wins where it ran
    assert profile_headline_eps_255(checkout / "results" / "test", "test") == 2
