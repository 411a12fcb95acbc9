"""DMAE's certification protocol around Cohen et al.'s CERTIFY (`robust_mim.certify`): the empirical
PGD-EOT check of certified points, the sanity checks shown beside certified accuracy, and the note
that states this run's N against the papers'.
"""
from __future__ import annotations

import torch

from robust_mim.certify import Smooth, attack_certified_points

PAPER_N = 100_000  # N of Cohen et al. (2019) and of DMAE's CIFAR-10 certification


def empirical_check(smooth: Smooth, x: torch.Tensor, images: list[dict], cfg: dict,
                    generator: torch.Generator) -> list[dict]:
    """PGD-EOT on the first ``attack_examples`` certified-correct images (radius > 0)."""
    chosen = [r for r in images if r["correct"] and r["radius"] > 0][: cfg["attack_examples"]]
    if not chosen:
        return []
    idx = [r["idx"] for r in chosen]
    return attack_certified_points(
        smooth, x[idx], torch.tensor([r["label"] for r in chosen]), [r["radius"] for r in chosen],
        factors=tuple(cfg["attack_factors"]), steps=cfg["attack_steps"], noise_samples=cfg["attack_noise_samples"],
        eot_samples=cfg["attack_eot_samples"], n=cfg["n"], alpha=cfg["alpha"], batch_size=cfg["batch_size"],
        indices=idx, generator=generator)


def certification_checks(images: list[dict], rows: list[dict], summary: list[dict], max_radius: float) -> list[dict]:
    """Sanity checks shown next to the numbers: radii within the N bound, monotone accuracy, PGD-EOT."""
    largest = max((r["radius"] for r in images), default=0.0)
    accuracy = [r["certified_accuracy"] for r in rows]
    checks = [
        {"check": "radii within max radius", "passed": largest <= max_radius + 1e-9,
         "details": {"largest_radius": largest, "max_radius": max_radius}},
        {"check": "certified accuracy non-increasing", "passed": all(a >= b for a, b in zip(accuracy, accuracy[1:])),
         "details": {}},
    ]
    for s in summary:
        name = "PGD-EOT within certificate" if s["factor"] <= 1 else f"PGD-EOT at {s['factor']:g}x radius"
        checks.append({"check": name, "passed": s["passed"], "details": s})
    if not summary:
        checks.append({"check": "PGD-EOT within certificate", "passed": None,
                       "details": {"reason": "no certified-correct image to attack"}})
    return checks


def certification_note(cfg: dict, sigma: float, max_radius: float) -> str:
    """One sentence stating this run's N beside the papers' and the radius cap it implies."""
    return (f"N = {cfg['n']:,} noise samples per image (the papers: N = {PAPER_N:,}); with N0 = {cfg['n0']}, "
            f"alpha = {cfg['alpha']} the largest certifiable radius at sigma = {sigma:g} is {max_radius:.3f}")
