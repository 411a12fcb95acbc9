"""Figures for the notebooks: functions take DataFrames of records and return matplotlib figures.

Every saved figure states the scale its numbers were measured at (`save` writes the profile's
scale note under it), so a PNG taken out of its notebook still says how to read it.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

LINESTYLES = {"pgd-linf": "-", "fgsm-linf": "--"}  # PGD solid, FGSM dashed (`accuracy_vs_eps`)
ATTACK_NAMES = {"pgd-linf": "PGD", "fgsm-linf": "FGSM"}


def style() -> None:
    """One look for every figure of the project."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def _panels(sub: pd.DataFrame, facet: str | None) -> dict[str, pd.DataFrame]:
    """Rows per panel: one per value of ``facet`` (comma-joined values, e.g. papers, put a model in each)."""
    if facet is None or facet not in sub:
        return {"": sub}
    keys = sub[facet].fillna("").astype(str).str.split(",")
    long = sub.assign(_panel=[[k.strip() or "other" for k in ks] for ks in keys]).explode("_panel")
    return {k: g for k, g in long.groupby("_panel", sort=True)}


def accuracy_vs_eps(df: pd.DataFrame, evaluations: list[str], title: str = "",
                    max_eps_255: float | None = None, facet: str | None = None) -> plt.Figure:
    """Robust accuracy (%) against L∞ ε (×255): one panel per value of ``facet`` (e.g. ``papers``), in each
    one colour per model (legend outside the data, right of the panel) and one line style per attack
    (`LINESTYLES`: PGD solid, FGSM dashed; stated in a legend above the panels)."""
    style()
    sub = df[df["evaluation"].isin(evaluations) & df["eps"].notna()].copy()
    if max_eps_255 is not None:
        sub = sub[sub["eps"] * 255 <= max_eps_255 + 1e-6]
    sub["eps_255"], sub["acc"] = (sub["eps"] * 255).round(2), sub["accuracy"] * 100
    panels = _panels(sub, facet)
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.2 * ncols, 3.3 * nrows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (name, rows) in zip(axes.flat, panels.items()):
        _eps_panel(ax, rows, evaluations)
        ax.set_title(name, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color="0.3", ls=LINESTYLES.get(e, ":"), label=ATTACK_NAMES.get(e, e))
               for e in evaluations]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=9, title=title or None)
    return fig


def _eps_panel(ax: plt.Axes, rows: pd.DataFrame, evaluations: list[str]) -> None:
    """One panel of `accuracy_vs_eps`: a colour per model, a line style per attack, legend of models outside."""
    colors = dict(zip(sorted(rows["model_id"].unique()), sns.color_palette("colorblind", rows["model_id"].nunique())))
    for (model, evaluation), curve in rows.groupby(["model_id", "evaluation"]):
        curve = curve.groupby("eps_255")["acc"].min()
        ax.plot(curve.index, curve.values, LINESTYLES.get(evaluation, ":"), marker="o", ms=3, color=colors[model])
    model_handles = [plt.Line2D([], [], color=c, marker="o", ms=3, label=m) for m, c in colors.items()]
    ax.legend(handles=model_handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set(xlabel="ε (1/255)", ylabel="accuracy (%)", ylim=(-2, 102))


def repel_offsets(points: list, size: float = 9.0, radius: float = 13.0) -> list[tuple[float, float]]:
    """Label offsets (points) for markers at positions ``points`` (in points): each label takes the first of a
    ring of candidate positions (growing outwards) that no earlier label or marker occupies (a greedy repel)."""
    import numpy as np

    markers = [np.asarray(p, dtype=float) for p in points]
    placed: list = []
    out = []
    for p in markers:
        for r in (radius, 1.8 * radius, 2.6 * radius, 3.4 * radius):
            ring = [(r * np.cos(a), r * np.sin(a)) for a in np.linspace(np.pi / 4, 2 * np.pi + np.pi / 4, 8,
                                                                         endpoint=False)]
            free = [o for o in ring if all(np.abs(p + o - q).max() > size for q in placed + markers)]
            if free:
                break
        off = free[0] if free else ring[0]
        placed.append(p + np.asarray(off))
        out.append((float(off[0]), float(off[1])))
    return out


def scale_footnote(fig: plt.Figure, scale_note: str, width: int = 110) -> None:
    """Write ``Scale: <scale_note>`` under the figure (wrapped), unless a text of the figure already says it."""
    texts = [t.get_text() for t in fig.findobj(plt.Text)]
    if not scale_note or any(scale_note in t for t in texts):
        return
    fig.text(0.01, -0.01, textwrap.fill(f"Scale: {scale_note}", width), ha="left", va="top", fontsize=8,
             color="0.3", style="italic")


def save(fig: plt.Figure, figures_dir: str | Path, name: str, scale_note: str = "") -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` (folders created) with the scale note under it; return the path."""
    scale_footnote(fig, scale_note)
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
