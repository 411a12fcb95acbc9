"""One verdict vocabulary, one noise allowance, one rule: `robust_mim.evaluation.verdict`, and the claims built on it."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from robust_mim.evaluation.verdict import (
    HELD, INCONCLUSIVE, NOT_HELD, NOT_RUN, VERDICTS, allowance, compare, from_check, verdict,
)


def test_allowance_is_two_standard_errors_of_the_difference_from_each_n():
    # p estimated as (k + 1)/(n + 2): 50 of 100 -> 51/102
    p = 51 / 102
    assert allowance(50, 50, 100, 100) == pytest.approx(100 * 2 * math.sqrt(2 * p * (1 - p) / 100))
    assert allowance(50, 50, 100, 10_000) < allowance(50, 50, 100, 100)  # each number's own n counts
    assert allowance(0, 0, 20, 20) > 0  # 0 % of 20 images is not certain
    assert allowance(50, 50, 0, 100) == math.inf


def test_small_differences_on_few_images_are_inconclusive_not_a_failure():
    # NIM's headline at the test profile printed "not reproduced" for 35.2 vs 34.1 (± 15.0)
    c = compare(35.2, 34.1, 16, 16)
    assert c.outcome == "within noise" and verdict([c]) == INCONCLUSIVE and "noise ±" in c.text()
    assert verdict([compare(60, 20, 100)]) == HELD
    assert verdict([compare(20, 60, 100)]) == NOT_HELD
    assert verdict([compare(20, 60, 100, lower_is_better=True)]) == HELD  # an error: lower is the paper's way


def test_one_rule_combines_comparisons():
    better, within, worse = compare(60, 20, 100), compare(21, 20, 100), compare(20, 60, 100)
    assert verdict([better, better]) == HELD
    assert verdict([better, within]) == INCONCLUSIVE
    assert verdict([better, within, worse]) == NOT_HELD
    assert verdict([better, compare(None, 20, 100)]) == NOT_RUN and verdict([]) == NOT_RUN
    assert verdict([within], at_least=True) == HELD and verdict([worse], at_least=True) == NOT_HELD
    assert from_check(True) == HELD and from_check(False) == NOT_HELD and from_check(None) == NOT_RUN
    assert set(VERDICTS) == {"held", "not held", "inconclusive (within noise)", "not run at this scale"}


def _mimir_table(aa_mimir: float, worst_mimir: float) -> pd.DataFrame:
    from robust_mim.papers.mimir.tables import ROLE_NAMES

    rows = {"scratch-at": ("scratch", 60.0, 30.0, 30.0), "mimir-at": ("mimir", 62.0, aa_mimir, worst_mimir)}
    return pd.DataFrame([{"model_id": m, "pretraining": ROLE_NAMES[r], "clean": c, "PGD-10": aa,
                          "AutoAttack (standard)": aa, "robust accuracy (worst case)": w, "n": 500}
                         for m, (r, c, aa, w) in rows.items()]).set_index("model_id")


def test_mimir_robustness_claims_are_judged_on_the_worst_case_with_the_protocol_beside_it():
    from robust_mim.papers.mimir import tables as t

    claims = t.claims(_mimir_table(aa_mimir=50.0, worst_mimir=20.0)).set_index("claim")
    row = claims.loc["MIMIR + AT is more robust than scratch + AT (worst case, 8/255)"]
    # AutoAttack alone says 50 vs 30 (held); the per-example worst case says 20 vs 30
    assert row["verdict"] == NOT_HELD
    assert "paper protocol, AutoAttack (standard): 50.0 vs 30.0" in row["ours"]
    assert "paper protocol overstates by 30.0 points" in row["ours"]
    held = t.claims(_mimir_table(aa_mimir=50.0, worst_mimir=50.0)).set_index("claim")
    assert held.loc["MIMIR + AT is more robust than scratch + AT (worst case, 8/255)", "verdict"] == HELD
    assert "overstates" not in held.loc["MIMIR + AT is more robust than scratch + AT (worst case, 8/255)", "ours"]
    assert set(held["verdict"]) <= set(VERDICTS)
