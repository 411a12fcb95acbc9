"""Deviation tables: one per paper, every row complete, rendered as a DataFrame and as markdown."""
import pytest

from robust_mim.errors import ConfigError
from robust_mim.papers import PAPERS
from robust_mim.reporting.deviations import COLUMNS, deviation_markdown, deviation_table, deviations


def test_every_registered_paper_has_a_table_of_complete_rows():
    assert set(PAPERS) >= {"nim", "mimir", "dmae", "chen", "dat"}
    for paper in PAPERS:
        rows = deviations(paper)
        assert len(rows) >= 5, paper
        for row in rows:
            assert all(getattr(row, c).strip() for c in COLUMNS), (paper, row)
            assert row.can_change_result.split(" ")[0] in ("yes", "unlikely", "no"), (paper, row)
        assert len({r.aspect for r in rows}) == len(rows), f"{paper}: an aspect is listed twice"


@pytest.mark.parametrize("paper, aspect", [
    ("dat", "discrete space"), ("dat", "mCE"), ("chen", "Selfie"), ("mimir", "pretraining attack target"),
    ("mimir", "adaptive attacks"), ("dmae", "fine-tuning recipe (cifar10)"), ("nim", "MAE baseline classifier"),
])
def test_the_issues_known_differences_are_stated(paper, aspect):
    assert aspect in set(deviation_table(paper)["aspect"])


def test_markdown_has_one_line_per_row_and_escapes_pipes():
    md = deviation_markdown("chen").splitlines()
    assert md[0].startswith("| aspect | official | ours | why | can change result |")
    assert len(md) == 2 + len(deviations("chen"))
    assert all(line.count("|") - line.count("\\|") == len(COLUMNS) + 1 for line in md[2:])
    with pytest.raises(ConfigError, match="known: nim, mimir"):
        deviation_table("selfie")


def test_the_cifar10_profile_no_longer_claims_to_follow_the_official_recipes(repo):
    header = (repo / "config" / "cifar10.yaml").read_text().split("\nprofile:")[0]
    assert "only departure" not in header.replace("NOT the only", "") and "robust_mim/papers/<paper>/deviations.py" in header
