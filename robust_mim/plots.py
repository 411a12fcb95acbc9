"""Figures for the notebooks: functions take DataFrames of records and return matplotlib figures."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def style() -> None:
    """One look for every figure of the project."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def accuracy_vs_eps(df: pd.DataFrame, evaluations: list[str], title: str = "",
                    max_eps_255: float | None = None) -> plt.Figure:
    """Robust accuracy (%) against L∞ ε (×255): one colour per model, one line style per attack."""
    style()
    sub = df[df["evaluation"].isin(evaluations) & df["eps"].notna()].copy()
    if max_eps_255 is not None:
        sub = sub[sub["eps"] * 255 <= max_eps_255 + 1e-6]
    sub["eps (1/255)"] = (sub["eps"] * 255).round(2)
    sub["accuracy (%)"] = sub["accuracy"] * 100
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.lineplot(data=sub, x="eps (1/255)", y="accuracy (%)", hue="model_id", style="evaluation",
                 markers=True, dashes=True, ax=ax)
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, figures_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` (folders created) and return the path."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
