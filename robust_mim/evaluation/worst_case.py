"""The headline robust accuracy: the per-example worst case over every attack run on a model.

An example counts as robust at ε only if it is classified correctly under every attack run at
any ε' <= ε in the same norm (clean included: x itself lies in every ball), so the headline
is never above any single attack's number and usually below all of them. Attacks record, per
row, which of their N examples stayed correct (``"correct"``: a compact hex bitstring, see
`encode_mask`) on the same first-N test images; `worst_case_mask` combines such masks, and
`worst_case_table` does it for every model of a records DataFrame. Rows without a mask (older
records, other image sets) enter by their accuracy: the headline is then the lower of the
per-example worst case and those accuracies.

For randomized models each mask is scored the way the evaluation states (``scoring`` in the
record: one draw, or majority over K draws); the worst case is taken over those masks.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from robust_mim.errors import AttackInputError


def encode_mask(mask: Tensor | Sequence[bool]) -> str:
    """Per-example correctness [N] bool -> hex string of its bits (little-endian within each byte)."""
    bits = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask, dtype=bool).reshape(-1)
    return np.packbits(bits, bitorder="little").tobytes().hex()


def decode_mask(code: str, n: int) -> Tensor:
    """Inverse of `encode_mask`: hex string of N bits -> bool tensor [N]."""
    raw = np.frombuffer(bytes.fromhex(code), dtype=np.uint8)
    if raw.size * 8 < n:
        raise AttackInputError(f"correctness mask of {raw.size * 8} bits cannot hold {n} examples")
    return torch.from_numpy(np.unpackbits(raw, bitorder="little")[:n].astype(bool))


def worst_case_mask(masks: Mapping[str, Tensor | Sequence[bool]]) -> tuple[Tensor, dict[str, int]]:
    """Per-example worst case over attacks: robust iff correct under every one.

    Args:
        masks: attack name -> correctness [N] bool (same N images, same order).

    Returns:
        (robust [N] bool, breaks: attack -> examples it alone breaks first, in the given order,
        i.e. the examples still robust after the earlier attacks that it misclassifies).
    """
    if not masks:
        raise AttackInputError("the worst case needs at least one attack's correctness mask")
    tensors = {name: torch.as_tensor(m, dtype=torch.bool).reshape(-1) for name, m in masks.items()}
    sizes = {name: int(m.numel()) for name, m in tensors.items()}
    if len(set(sizes.values())) != 1:
        raise AttackInputError(f"correctness masks cover different numbers of examples: {sizes}")
    robust, breaks = torch.ones(next(iter(sizes.values())), dtype=torch.bool), {}
    for name, mask in tensors.items():
        breaks[name] = int((robust & ~mask).sum())
        robust &= mask
    return robust, breaks


def worst_case_accuracy(masks: Mapping[str, Tensor | Sequence[bool]]) -> dict[str, Any]:
    """`worst_case_mask` as numbers: {"accuracy", "n_correct", "n_examples", "attack": the one breaking most}."""
    robust, breaks = worst_case_mask(masks)
    n = int(robust.numel())
    decisive = sorted(breaks, key=lambda a: -breaks[a])
    return {"accuracy": float(robust.float().mean()) if n else math.nan, "n_correct": int(robust.sum()),
            "n_examples": n, "attack": decisive[0] if decisive else "", "breaks": breaks}


# ----------------------------------------------------------------------------- over records

NOT_ATTACKS = ("sanity", "sanity-adaptive", "sigma-sweep", "certify", "pretext", "corruption", "vq-reconstruction")


def linf_attack_rows(df: Any) -> Any:
    """Rows of a records DataFrame that are L∞ attack accuracies (ε set; no sanity, sweep, certification, L2)."""
    rows = df[df["eps"].notna() & df["accuracy"].notna() & ~df["evaluation"].isin(NOT_ATTACKS)]
    norm = rows["norm"].fillna("linf") if "norm" in rows else rows["evaluation"].map(
        lambda e: "l2" if "l2" in e else "linf")
    return rows[norm == "linf"]



def _model_worst(rows: Any, eps: float) -> dict[str, Any]:
    """Worst case at ``eps`` of one model's attack rows (a DataFrame with eps, accuracy, [correct, n_examples])."""
    at_most = rows[rows["eps"].astype(float) <= eps + 1e-9]
    masked = at_most[at_most["correct"].notna()] if "correct" in at_most else at_most.iloc[:0]
    n = int(masked["n_examples"].mode().iloc[0]) if len(masked) else 0
    masked = masked[masked["n_examples"] == n]
    out = {"accuracy": math.nan, "attack": "", "n_examples": n, "per_example": bool(len(masked))}
    if len(masked):
        order = masked.sort_values(["eps", "accuracy"], ascending=[False, True])  # credit the strongest first
        names = [f"{r['evaluation']}@{r['eps'] * 255:g}/255" if r["eps"] else "clean" for _, r in order.iterrows()]
        masks = {name: decode_mask(r["correct"], n) for name, (_, r) in zip(names, order.iterrows())}
        res = worst_case_accuracy(masks)
        out.update(accuracy=res["accuracy"], attack=res["attack"])
    exact = rows[((rows["eps"].astype(float) - eps).abs() < 1e-6) & ~rows.index.isin(masked.index)]
    if len(exact) and not exact["accuracy"].min() >= out["accuracy"]:  # unmasked rows enter by accuracy
        best = exact.loc[exact["accuracy"].idxmin()]
        out.update(accuracy=float(best["accuracy"]), attack=str(best["evaluation"]))
    return out


def worst_case_table(rows: Any, eps: float) -> Any:
    """Per model the headline robust accuracy at ``eps`` from a records DataFrame of attack rows.

    Args:
        rows: one norm's attack rows (columns model_id, evaluation, eps, accuracy, and where
            recorded correct, n_examples); non-attack rows (sanity, certification) must be removed.

    Returns:
        DataFrame indexed by model_id: ``accuracy`` (%), ``attack`` (the one breaking most examples),
        ``n_examples`` and ``per_example`` (False: only per-attack accuracies were available).
    """
    import pandas as pd

    out = {m: _model_worst(sub, eps) for m, sub in rows.groupby("model_id")} if len(rows) else {}
    table = pd.DataFrame.from_dict(out, orient="index", columns=["accuracy", "attack", "n_examples", "per_example"])
    table["accuracy"] = table["accuracy"].astype(float) * 100
    table.index.name = "model_id"
    return table


def overstatement(protocol: float, worst: float, n: int, z: float = 2.0, slack_examples: int = 2) -> str:
    """Sanity flag for a paper-protocol number (%) beside the worst case (%) on ``n`` examples.

    Returns "" when ``protocol`` is within noise of (or below) ``worst``, else
    "paper protocol overstates by X points" (noise: `robust_mim.evaluation.suite.tolerance`).
    """
    from robust_mim.evaluation.verdict import tolerance

    if any(isinstance(v, float) and math.isnan(v) for v in (protocol, worst)) or n <= 0:
        return ""
    gap = protocol - worst
    return f"paper protocol overstates by {gap:.1f} points" if gap / 100 > tolerance(worst / 100, n, z,
                                                                                       slack_examples) else ""


def overstatement_flags(protocol: Iterable[float], worst: Iterable[float], n: Iterable[int]) -> list[str]:
    """`overstatement` element-wise (e.g. over table columns)."""
    return [overstatement(float(p), float(w), int(k) if k == k else 0) for p, w, k in zip(protocol, worst, n)]


__all__ = ["NOT_ATTACKS", "decode_mask", "encode_mask", "linf_attack_rows", "overstatement", "overstatement_flags",
           "worst_case_accuracy", "worst_case_mask", "worst_case_table"]
