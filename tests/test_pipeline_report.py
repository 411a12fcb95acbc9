"""End to end: the leaderboard notebook, model cards, claims table, HTML exports and `snakemake --report`
on the finished test-profile pipeline (the session fixture ``pipeline``)."""
import hashlib
import json

import pytest
import yaml

from conftest import REPO, snakemake

pytestmark = pytest.mark.pipeline
CONFIG = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
RES = "results/test"


def test_claims_md_has_one_line_per_paper(pipeline):
    lines = (pipeline / RES / "claims.md").read_text().splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("| paper |"))) + 2
    rows = lines[start:lines.index("", start)]
    assert len(rows) == 5
    for row in rows:
        status = row.split(" | ")[-2]
        assert status.strip("*") in {"reproduced", "not reproduced", "not reproduced (within noise)",
                                     "not yet run at this scale", "not testable at this scale"}, row
    assert "test profile" in "\n".join(lines)  # the scale of the numbers is stated


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
    for category in ("0 overview and leaderboard", "6 claims"):
        assert category in page
