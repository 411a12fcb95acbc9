"""End to end: the leaderboard notebook, model cards, claims table, HTML exports and `snakemake --report`
on the finished test-profile pipeline (the session fixture ``pipeline``)."""
import hashlib
import json

import pytest
import yaml

from robust_mim.config import validate_config
from conftest import REPO, snakemake, profile_schema

pytestmark = pytest.mark.pipeline
CONFIG = validate_config(yaml.safe_load((REPO / "config" / "test.yaml").read_text()), profile_schema())  # defaults filled
RES = "results/test"


def test_claims_md_has_one_line_per_paper(pipeline):
    lines = (pipeline / RES / "claims.md").read_text().splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("| paper |"))) + 2
    rows = lines[start:lines.index("", start)]
    assert len(rows) == 5
    for row in rows:
        status = row.split(" | ")[-2]
        assert status.strip("*") in {"held", "not held", "inconclusive (within noise)", "not run at this scale"}, row
    assert "test profile" in "\n".join(lines)  # the scale of the numbers is stated
    for row in rows:  # each paper links its deviation table, written by its executed notebook
        target = row.split("[deviations](")[1].split(")")[0]
        assert (pipeline / RES / target).resolve().is_file(), target


def test_one_model_card_per_classifier_tied_to_its_checkpoint(pipeline):
    cards = {p.stem: json.loads(p.read_text()) for p in (pipeline / RES / "model_cards").glob("*.json")}
    assert sorted(cards) == sorted(CONFIG["finetune"]["runs"])
    for model_id, card in cards.items():
        assert card["model_id"] == model_id and card["profile"] == "test"
        weights = pipeline / card["checkpoint"]["path"]
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["checkpoint"]["sha256"]
        assert isinstance(card["clean_acc"], float) and 0 <= card["clean_acc"] <= 100
        assert card["training"]["cost"]["wall_s"] > 0 and card["evaluations"]
        assert card["training"]["finetune"]["method"] == CONFIG["finetune"]["runs"][model_id]["method"]


def test_leaderboard_notebook_figures_and_html_exports_exist(pipeline):
    executed = json.loads((pipeline / RES / "notebooks" / "06_leaderboard.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = pipeline / "figures" / "test" / "06_leaderboard"
    for name in ("pareto_clean_vs_robust.png", "robust_vs_training_cost.png", "leaderboard.html", "leaderboard.csv"):
        assert (figures / name).stat().st_size > 500, name
    board = (figures / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 1 + len(CONFIG["finetune"]["runs"])  # one row per trained classifier
    for nb in CONFIG["notebooks"]:
        assert (pipeline / RES / "html" / f"{nb}.html").read_text().lstrip().lower().startswith("<!doctype html")
    page = (pipeline / RES / "html" / "06_leaderboard.html").read_text()
    assert "data:image/png;base64" in page and 'id="leaderboard"' in page  # figures embedded, sortable table


def test_snakemake_report_writes_one_html_with_every_paper_category(pipeline, tmp_path):
    out = tmp_path / "report.html"
    run = snakemake(pipeline, "--report", str(out))
    assert run.returncode == 0, run.stderr[-4000:]
    page = out.read_text(errors="replace")
    assert len(page) > 100_000
    for category in ("0 claims", "1 NIM - De3", "5 DAT", "6 overview and leaderboard"):
        assert category in page
    assert "How the pipeline works" in page  # the workflow description
    assert page.count("test profile: nano ViT") >= 11  # every figure's caption states its scale


def test_every_figure_the_pipeline_draws_has_its_own_caption(pipeline):
    from types import SimpleNamespace

    import jinja2

    template = jinja2.Environment().from_string((REPO / "report" / "figure.rst").read_text())
    figures = sorted((pipeline / "figures" / "test").glob("*/*.png")) + \
        sorted((pipeline / "figures" / "test").glob("*/*.html"))
    assert len(figures) >= 11
    for fig in figures:
        wildcards = SimpleNamespace(name=fig.stem, notebook=fig.parent.name)
        caption = template.render(snakemake=SimpleNamespace(wildcards=wildcards, config=CONFIG))
        assert not caption.startswith("Figure ``"), f"{fig.parent.name}/{fig.name} has only the generic caption"
        assert CONFIG["scale_note"] in caption


def test_claims_are_also_an_html_table(pipeline):
    page = (pipeline / RES / "claims.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<table>") >= 2 and "headline claim" in page
