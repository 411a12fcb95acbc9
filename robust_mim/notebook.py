"""Set-up shared by the notebooks: where their records and figures are, and checks of their parameters.

A notebook's parameters cell names ``results_dir`` and ``figures_dir`` relative to the repository
root; JupyterLab starts kernels in ``notebooks/`` and papermill wherever it is called, so
`notebook_dirs` resolves both against the root found by walking up from the working directory.
A manual run (``figures_dir = None``) writes its figures to ``figures/<profile>/reruns/<notebook>``,
never over the pipeline's ``figures/<profile>/<notebook>`` (the pipeline passes its own folder).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from robust_mim.errors import RobustMimError

if TYPE_CHECKING:  # pandas is imported where it is used: rule notebook_run reads parameters cells while parsing
    import pandas as pd


class ParameterError(RobustMimError, ValueError):
    """A notebook parameter asks for something the records do not hold (an ε that was never attacked)."""


def project_root(start: Path | str | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) holding
    ``Snakefile`` and ``robust_mim/``; None outside a checkout."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Snakefile").is_file() and (folder / "robust_mim").is_dir():
            return folder
    return None


def base_dir(results_dir: Path | str) -> Path:
    """The folder relative paths are taken from: the working directory when it holds ``results_dir``
    (the pipeline runs notebooks there) or is outside a checkout; else the repository root."""
    cwd = Path.cwd()
    root = project_root(cwd)
    return cwd if root is None or (cwd / Path(results_dir).expanduser()).exists() else root


def resolve_dir(path: Path | str, base: Path | None = None) -> Path:
    """``path`` itself if absolute, else ``base / path`` (default base: `base_dir` of ``path``)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base or base_dir(path)) / path


def notebook_dirs(profile: str, results_dir: Path | str, figures_dir: Path | str | None,
                  notebook: str) -> tuple[Path, Path]:
    """(results_dir, figures_dir) of a notebook run as absolute paths, and one-line errors from here on.

    Both are taken relative to `base_dir` (the repository root when JupyterLab starts the kernel in
    ``notebooks/``). ``figures_dir = None`` (a JupyterLab or papermill run without ``-p figures_dir``)
    becomes ``figures/<profile>/reruns/<notebook>``, so a rerun never overwrites the pipeline's figures.
    """
    show_errors_in_one_line()
    base = base_dir(results_dir)
    if figures_dir is None:
        figures_dir = Path("figures") / profile / "reruns" / notebook
        print(f"figures of this run go to {base / figures_dir} (pass -p figures_dir DIR to choose)")
    return resolve_dir(results_dir, base), resolve_dir(figures_dir, base)


def _one_line(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    line = [f"robust_mim: error: {value}"]
    shell._showtraceback(etype, value, line)  # noqa: SLF001 - IPython's way to emit an error output
    return line


def show_errors_in_one_line() -> None:
    """In an IPython kernel, show a `RobustMimError` as its one line instead of a traceback
    (the cell still fails, so papermill and *Run All* stop there)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((RobustMimError,), _one_line)


def notebook_parameters(path: Path | str) -> list[str]:
    """The names the parameters cell (the code cell tagged ``parameters``) of notebook ``path`` assigns,
    in order: what ``papermill -p`` may set. Rule notebook_run passes a profile value (e.g. the headline
    ε) only to the notebooks whose parameters cell names it."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    source = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), "")
    targets = [t for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
               for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def require_values(df: pd.DataFrame, column: str, scale: float = 1.0, *, evaluations: Iterable[str] | None = None,
                   if_any: bool = False, **requested: Any) -> None:
    """Each requested parameter value (name=value or name=[values]) must appear in ``df[column] * scale``.

    Rows: those of ``evaluations`` if given, never sanity rows. With ``if_any``, records holding no
    value at all pass (a column shown only where measured). Otherwise a missing value raises one
    `ParameterError` line naming the values that were run, e.g. ``require_values(df, "eps", 255,
    eps_255=4)`` with only 8/255 attacked: "eps_255 = 4 was never run: the records hold eps_255 = 8 only; ...".
    """
    import pandas as pd

    rows = df[df["evaluation"] != "sanity"] if "evaluation" in df else df
    if evaluations is not None and "evaluation" in rows:
        rows = rows[rows["evaluation"].isin(list(evaluations))]
    values = rows[column].dropna() * scale if column in rows else pd.Series(dtype=float)
    have = sorted({round(float(v), 6) for v in values})
    if if_any and not have:
        return
    for name, value in requested.items():
        missing = [v for v in _as_list(value) if round(v, 6) not in have]
        if missing:
            held = ", ".join(f"{v:g}" for v in have) or "nothing"
            raise ParameterError(f"{name} = {', '.join(f'{v:g}' for v in missing)} was never run: the records hold "
                                 f"{name} = {held} only; pass values among them (-p {name} ...)")
