"""Figures a reader can take alone: the scale under every figure, facets per paper with legends outside
the data, labels that do not overlap, labelled image grids; paper notebooks save their tables as HTML."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robust_mim.reporting import plots

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_save_writes_the_scale_under_the_figure_once(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plots.save(fig, tmp_path, "f", scale_note="tiny-scale: 16 images")
    assert (tmp_path / "f.png").is_file()
    texts = [t.get_text() for t in fig.texts]
    assert texts == ["Scale: tiny-scale: 16 images"]
    plots.save(fig, tmp_path, "f", scale_note="tiny-scale: 16 images")  # saved again: not written twice
    assert len(fig.texts) == 1


def _records() -> pd.DataFrame:
    rows = []
    for model, papers in (("a", "nim"), ("b", "nim,dat"), ("c", "")):
        for ev, drop in (("pgd-linf", 0.4), ("fgsm-linf", 0.3)):
            rows += [{"model_id": model, "papers": papers, "evaluation": ev, "eps": e / 255,
                      "accuracy": 0.9 - drop * e / 8} for e in (0, 4, 8)]
    return pd.DataFrame(rows)


def test_overview_has_one_panel_per_paper_solid_pgd_dashed_fgsm_and_legends_outside():
    fig = plots.accuracy_vs_eps(_records(), ["pgd-linf", "fgsm-linf"], "t", facet="papers")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["dat", "nim", "other"]  # b is in two papers; c in none
    nim = axes[1]
    assert {line.get_linestyle() for line in nim.lines} == {"-", "--"}
    assert len(nim.lines) == 4  # 2 models × 2 attacks
    legend = nim.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= nim.get_window_extent().x1  # outside the data, on the right
    style = {t.get_text(): h.get_linestyle() for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert style == {"PGD": "-", "FGSM": "--"}


def test_repel_offsets_keeps_labels_of_nearby_points_apart():
    points = [np.array([100.0, 100.0]) + k * np.array([3.0, 0.0]) for k in range(6)]  # six markers 3 pt apart
    offsets = plots.repel_offsets(points)
    labels = [p + np.asarray(o) for p, o in zip(points, offsets)]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            assert np.abs(labels[i] - labels[j]).max() > 9.0


def test_vq_grid_rows_are_labelled(tmp_path):
    from robust_mim.papers.dat.tables import plot_reconstructions

    path = tmp_path / "rec.png"
    plt.imsave(path, np.random.default_rng(0).random((34, 66, 3)))
    fig = plot_reconstructions(path, "vq")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "original" and labels[1].startswith("reconstruction")


def _code(name: str) -> str:
    nb = json.loads((NOTEBOOKS / name).read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_every_saved_figure_of_every_notebook_states_its_scale():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        calls = re.findall(r"\bsave\(fig, figures_dir, [^\n]*", _code(path.name))
        assert calls, path.name
        assert all("scale_note=" in c for c in calls), (path.name, calls)


def test_paper_notebooks_save_their_main_table_as_html():
    for path in sorted(NOTEBOOKS.glob("0[1-5]_*.ipynb")):
        assert re.search(r"save_table\([^\n]*\n?[^\n]*\"table_\w+\"", _code(path.name)), path.name


def test_overview_text_matches_its_legend():
    nb = json.loads((NOTEBOOKS / "00_overview.ipynb").read_text())
    text = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "solid lines PGD, dashed lines FGSM" in text and plots.LINESTYLES == {"pgd-linf": "-", "fgsm-linf": "--"}
