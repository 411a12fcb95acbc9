import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert any(nb.name == "00_overview.ipynb" for nb in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs_and_has_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs"
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "first code cell must be tagged parameters"
    src = "".join(code[0]["source"])
    assert "profile" in src and "results_dir" in src


@pytest.fixture(scope="module")
def checkout(pipeline, tmp_path_factory) -> Path:
    """A folder laid out as a clone after ``make all``: the root's markers (Snakefile, robust_mim/), the
    notebooks, the test pipeline's records (linked) and a copy of its figures."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "Snakefile").write_text("")
    (root / "robust_mim").mkdir()
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "results").mkdir()
    (root / "results" / "test").symlink_to(pipeline / "results" / "test")
    shutil.copytree(pipeline / "figures", root / "figures")
    return root


def _execute(checkout: Path, name: str, **parameters) -> None:
    """Run a notebook as JupyterLab does: the kernel's working directory is ``notebooks/``."""
    import papermill

    papermill.execute_notebook(str(checkout / "notebooks" / name), str(checkout / f"out-{name}"),
                               parameters=parameters, cwd=str(checkout / "notebooks"), progress_bar=False)


def _pngs(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.png")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_runs_from_the_notebooks_folder_and_leaves_the_pipelines_figures(checkout, path):
    pipeline_figures = checkout / "figures" / "test" / path.stem
    before = _pngs(pipeline_figures)
    _execute(checkout, path.name, profile="test", results_dir="results/test")
    assert before and _pngs(pipeline_figures) == before
    assert _pngs(checkout / "figures" / "test" / "reruns" / path.stem), "a rerun writes its figures apart"


def _error_line(checkout: Path, name: str, **parameters) -> str:
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        _execute(checkout, name, **parameters)
    assert len(err.value.traceback) == 1, "one line, not a traceback"
    return err.value.traceback[0]


def test_records_of_another_profile_stop_the_notebook_with_one_line(checkout):
    line = _error_line(checkout, "00_overview.ipynb", profile="smoke", results_dir="results/test")
    assert line.startswith("robust_mim: error: records in ") and \
        line.endswith("are of profile 'test', not 'smoke': pass -p results_dir results/smoke (or -p profile test)")


def test_an_eps_never_attacked_names_the_eps_that_were(checkout):
    line = _error_line(checkout, "02_mimir.ipynb", profile="test", results_dir="results/test", headline_eps_255=4)
    assert line == "robust_mim: error: headline_eps_255 = 4 was never run: the records hold headline_eps_255 = 8 " \
                   "only; pass values among them (-p headline_eps_255 ...)"
