"""Notebook set-up: paths found from any working directory, the profile of the records checked,
parameters asking for values never run refused in one line, rerun figures kept apart."""
import pandas as pd
import pytest

from robust_mim.notebook import ParameterError, notebook_dirs, project_root, require_values
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
