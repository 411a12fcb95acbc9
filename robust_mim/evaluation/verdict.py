"""One verdict vocabulary for every paper's claims, decided by one function.

Every claim of every paper (``robust_mim/papers/<paper>/tables.py``), the claims table (``claims.md``)
and every notebook says one of four words:

* ``held``: every comparison the claim makes goes the paper's way beyond noise;
* ``not held``: at least one goes the other way beyond noise;
* ``inconclusive (within noise)``: neither (some difference lies within noise);
* ``not run at this scale``: a model or record the claim needs is missing in this profile.

Noise allowance, stated once: two binomial standard errors of the difference of two
accuracies, each from its own number of test images,
``2·sqrt(p_a(1−p_a)/n_a + p_b(1−p_b)/n_b)``, with each p estimated as (k + 1)/(n + 2) so that
0 % and 100 % on a few images are not taken as certain. A claim that one number is *not lower*
than another (e.g. "keeps the clean accuracy") holds unless it is lower beyond that allowance.
Quantities that are not accuracies of test images (e.g. epoch means of a training loss) pass
their own allowance to `outcome`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import pandas as pd

HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN = "held", "not held", "inconclusive (within noise)", "not run at this scale"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN)
BETTER, WORSE, WITHIN = "better", "worse", "within noise"
Z = 2.0  # standard errors of the difference that make it real


def allowance(a: float, b: float, n_a: int, n_b: int) -> float:
    """Noise allowance (percentage points) of the difference of accuracies a, b (%) on n_a, n_b images."""
    if n_a <= 0 or n_b <= 0:
        return math.inf
    p, q = ((x / 100 * n + 1) / (n + 2) for x, n in ((a, n_a), (b, n_b)))
    return 100 * Z * math.sqrt(p * (1 - p) / n_a + q * (1 - q) / n_b)


def outcome(gain: float, noise: float) -> str:
    """``better`` / ``worse`` / ``within noise`` of a gain in the paper's direction against its allowance."""
    return BETTER if gain > noise else WORSE if gain < -noise else WITHIN


@dataclass(frozen=True)
class Comparison:
    """Our number ``a`` against ``b`` (% of n_a, n_b test images) in the direction the paper claims."""

    a: float
    b: float
    noise: float
    outcome: str | None  # better / worse / within noise; None when a number is missing

    def text(self) -> str:
        """e.g. ``35.2 vs 34.1 (+1.1 points, noise ±15.0)``."""
        if self.outcome is None:
            return "not measured"
        return f"{self.a:.1f} vs {self.b:.1f} ({self.a - self.b:+.1f} points, noise ±{self.noise:.1f})"


def compare(a: float | None, b: float | None, n_a: int, n_b: int | None = None,
            lower_is_better: bool = False) -> Comparison:
    """Compare accuracies a and b (%) measured on n_a and n_b images (n_b defaults to n_a).

    The claim's direction is "a above b" (or "a below b" with ``lower_is_better``, e.g. an error).
    """
    n_b = n_a if n_b is None else n_b
    if a is None or b is None or any(isinstance(v, float) and math.isnan(v) for v in (a, b)) or not n_a or not n_b:
        return Comparison(math.nan if a is None else float(a), math.nan if b is None else float(b), math.nan, None)
    noise = allowance(a, b, int(n_a), int(n_b))
    gain = (b - a) if lower_is_better else (a - b)
    return Comparison(float(a), float(b), noise, outcome(gain, noise))


def verdict(outcomes: Iterable[str | Comparison | None], at_least: bool = False) -> str:
    """The claim's verdict from the outcomes of the comparisons it makes (the one rule every paper uses).

    Args:
        outcomes: per comparison, ``better`` / ``worse`` / ``within noise`` (or a `Comparison`);
            None (a missing number) makes the claim ``not run at this scale``, as does no comparison.
        at_least: the claim says "not lower" (a tie holds), not "higher".
    """
    names = [o.outcome if isinstance(o, Comparison) else o for o in outcomes]
    if not names or any(o is None for o in names):
        return NOT_RUN
    if WORSE in names:
        return NOT_HELD
    if at_least or all(o == BETTER for o in names):
        return HELD
    return INCONCLUSIVE


def from_check(passed: bool | None) -> str:
    """Verdict of a claim decided by a pass/fail check with its own tolerance (None: not run)."""
    return verdict([None if passed is None else BETTER if passed else WORSE])


def tolerance(p: float, n: int, z: float = 2.0, slack_examples: int = 2) -> float:
    """Allowed noise when comparing an accuracy ``p`` on ``n`` examples: ``z·√(p(1−p)/n) + slack/n``."""
    return z * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1)) + slack_examples / max(n, 1)



def claim_rows(claims: "pd.DataFrame", claim: str, ours: str, status: str) -> "pd.DataFrame":
    """A paper's claims as the columns [claim, ours, status] of the claims table; every status must be
    one of `VERDICTS` (a paper that words its verdicts otherwise fails here, not in the table)."""
    import pandas as pd

    unknown = set(claims[status]) - set(VERDICTS)
    if unknown:
        raise ValueError(f"claims outside the verdict vocabulary {VERDICTS}: {sorted(unknown)}")
    return pd.DataFrame({"claim": claims[claim].astype(str), "ours": claims[ours].astype(str),
                         "status": claims[status].astype(str)})


__all__ = ["BETTER", "HELD", "INCONCLUSIVE", "NOT_HELD", "NOT_RUN", "VERDICTS", "WITHIN", "WORSE", "Comparison",
           "allowance", "claim_rows", "compare", "from_check", "outcome", "tolerance", "verdict"]
