"""Tables, figures and claims of notebook 03 (paper 3: DMAE, Wu et al., ICLR 2023), from records only.

Certification records (evaluation ``certify``, one per model × σ, written by
``python -m robust_mim.cli certify``) hold certified accuracy on a radius grid, σ, N0, N, α, the
number of images, the largest radius N allows, and the PGD-EOT check. Nothing here recomputes a
certificate: functions filter, pivot and compare what the records say.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from robust_mim.notebook import resolve_dir
from robust_mim.records import iter_records
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.verdict import claim_rows, NOT_RUN, compare, from_check, verdict

TABLE_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
CLAIM_RADII = (0.25, 0.5, 0.75, 1.0)

# (pretraining objective of the encoder, fine-tuning method) -> the paper's name for the model
FAMILIES = {
    (None, "gaussian"): "Cohen RS",
    ("mae", "gaussian"): "MAE + Gaussian FT",
    ("dmae", "gaussian"): "DMAE + Gaussian FT",
    ("dmae", "consistency"): "DMAE + consistency",
}

# CIFAR-10 certified accuracy (%) at L2 radius r as DMAE's comparison table reports it (one number
# per radius; we compare it with our best over σ). DMAE: Wu et al., ICLR 2023; Cohen RS: Cohen et
# al., ICML 2019, as quoted by DMAE.
PAPER_CIFAR10 = {
    "DMAE + consistency": {
        "paper": "Wu et al. 2023 (DMAE ViT-B)", 0.25: 79.2, 0.5: 64.6, 0.75: 47.3, 1.0: 36.1,
        "scale": "ViT-B/16 (86M), DMAE-pretrained on ImageNet-1k (1100 epochs), fine-tuned on CIFAR-10 "
                 "at 224 px with consistency regularization; N = 100,000, N0 = 100, alpha = 0.001, "
                 "all 10,000 test images"},
    "Cohen RS": {
        "paper": "Cohen et al. 2019 (ResNet-110)", 0.25: 61.0, 0.5: 43.0, 0.75: 32.0, 1.0: 23.0,
        "scale": "ResNet-110 trained with Gaussian augmentation on CIFAR-10; N = 100,000, N0 = 100, "
                 "alpha = 0.001, 500 test images"},
}


def family_name(pretrain_objective: str | None, method: str) -> str:
    """The paper's name of a model from its encoder's pretraining objective and fine-tuning method."""
    key = (None if pd.isna(pretrain_objective) else pretrain_objective, method)
    return FAMILIES.get(key, f"{key[0] or 'scratch'} + {method}")


def load_certifications(results_dir: str | Path, profile: str, n_samples: int | None = None,
                        sigmas: list[float] | None = None) -> pd.DataFrame:
    """Rows of the ``certify`` records (one per model × σ × radius), with a ``family`` column.

    ``n_samples`` / ``sigmas`` keep only records certified with that N / those σ (papermill
    parameters select what is shown; the pipeline computes). Raises `RecordsMissing` naming the
    command or the config key that produces the missing records.
    """
    df = load_records(results_dir, profile)
    cert = df[df["evaluation"] == "certify"].copy()
    if cert.empty:
        raise RecordsMissing(f"no certification records under {results_dir}: run `snakemake --cores 8 all "
                             f"--configfile config/{profile}.yaml` (rule certify_smoothed)")
    if n_samples is not None:
        cert = cert[cert["n"] == int(n_samples)]
    if sigmas is not None:
        cert = cert[cert["sigma"].round(6).isin([round(float(s), 6) for s in sigmas])]
    if cert.empty:
        have = df[df["evaluation"] == "certify"]
        ns, ss = sorted({int(v) for v in have["n"]}), sorted({float(v) for v in have["sigma"]})
        raise RecordsMissing(f"no certification records with N = {n_samples} and sigma in {sigmas} (records have "
                             f"N in {ns}, sigma in {ss}): set `dmae.n` / `dmae.sigmas` in config/{profile}.yaml "
                             "and rerun the pipeline")
    for optional in ("train_epochs", "pretrain_objective"):  # absent from records of older code versions
        if optional not in cert:
            cert[optional] = None
    cert["within_max_radius"] = cert["within_max_radius"].astype(bool)
    cert[["n0", "n", "n_images"]] = cert[["n0", "n", "n_images"]].astype(int)
    cert["family"] = [family_name(p, m) for p, m in zip(cert["pretrain_objective"], cert["method"])]
    return cert


def table_radii(cert: pd.DataFrame) -> tuple[float, ...]:
    """The table radii the records were certified for (the profile's ``dmae.radii``), sorted.

    Each record flags its table radii (``in_table``) among the finer radius grid of its curve; records
    without the flag fall back to the paper's table radii.
    """
    if "in_table" not in cert or cert["in_table"].isna().all():
        return TABLE_RADII
    return tuple(sorted({round(float(r), 6) for r in cert.loc[cert["in_table"].fillna(False).astype(bool), "radius"]}))


def certification_records(results_dir: str | Path, model_sigmas: set[tuple[str, float]]) -> list[dict[str, Any]]:
    """The full ``certify`` record dicts (with per-image rows and the PGD-EOT check) of the given models × σ."""
    keep = {(m, round(s, 6)) for m, s in model_sigmas}
    return [r for r in iter_records(resolve_dir(results_dir) / "records")
            if r.get("evaluation") == "certify" and (r["model_id"], round(r["sigma"], 6)) in keep]


def scale_table(cert: pd.DataFrame) -> pd.DataFrame:
    """Certification parameters per σ: N0, N, α, images, and the largest radius N allows."""
    cols = ["sigma", "n0", "n", "alpha", "n_images", "max_radius"]
    return cert[cols].drop_duplicates().sort_values("sigma").reset_index(drop=True)


def certified_table(cert: pd.DataFrame, radii: tuple[float, ...] = TABLE_RADII) -> pd.DataFrame:
    """Certified accuracy (%) per family × σ (rows) at each radius (columns), with training epochs.

    A radius above the record's ``max_radius`` is NaN: no image can be certified there with that N,
    whatever the model, so 0 would be misleading.
    """
    sub = cert[cert["radius"].round(6).isin([round(r, 6) for r in radii])].copy()
    sub["value"] = (sub["certified_accuracy"] * 100).where(sub["within_max_radius"])
    table = sub.set_index(["family", "sigma", "model_id", "radius"])["value"].unstack("radius")
    table.columns = [f"r={c:g}" for c in table.columns]
    per_model = cert.groupby(["family", "sigma", "model_id"])[["train_epochs", "failed_checks"]].first()
    table["fine-tuning epochs"] = per_model["train_epochs"].reindex(table.index)
    table["failed sanity checks"] = per_model["failed_checks"].reindex(table.index).fillna("")
    return table.round(1)


def best_over_sigma(cert: pd.DataFrame, radii: tuple[float, ...] = TABLE_RADII) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per family and radius: the best certified accuracy (%) over σ, and the σ that attains it."""
    sub = cert[cert["radius"].round(6).isin([round(r, 6) for r in radii]) & cert["within_max_radius"]].copy()
    sub["value"] = sub["certified_accuracy"] * 100
    best_idx = sub.groupby(["family", "radius"])["value"].idxmax()
    best = sub.loc[best_idx]
    columns = sorted(round(float(r), 6) for r in radii)
    value = best.pivot(index="family", columns="radius", values="value").reindex(columns=columns).round(1)
    sigma = best.pivot(index="family", columns="radius", values="sigma").reindex(columns=columns)
    for t in (value, sigma):
        t.columns = [f"r={c:g}" for c in t.columns]
    return value, sigma


def paper_comparison(best: pd.DataFrame, scale_note: str, n: int) -> pd.DataFrame:
    """The paper's CIFAR-10 numbers beside our best over σ, each with the scale it was measured at."""
    rows = []
    for family, paper in PAPER_CIFAR10.items():
        rows.append({"model": family, "source": paper["paper"], "scale": paper["scale"],
                     **{f"r={r:g}": paper[r] for r in CLAIM_RADII}})
        ours = best.loc[family] if family in best.index else pd.Series(dtype=float)
        rows.append({"model": family, "source": "this run", "scale": f"{scale_note}; N = {n:,}",
                     **{f"r={r:g}": ours.get(f"r={r:g}", float("nan")) for r in CLAIM_RADII}})
    return pd.DataFrame(rows).set_index(["model", "source"])


def certified_curves(cert: pd.DataFrame, title: str = "") -> plt.Figure:
    """Certified accuracy (%) against L2 radius: one curve per model and σ; dotted line at each max radius."""
    from robust_mim.reporting.plots import style

    import seaborn as sns

    style()
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    colors = dict(zip(sorted(cert["family"].unique()), sns.color_palette("colorblind")))
    styles = dict(zip(sorted(cert["sigma"].unique()), ["-", "--", "-.", ":"] * 3))
    for (family, sigma), g in cert.groupby(["family", "sigma"]):
        g = g[g["within_max_radius"]].sort_values("radius")
        ax.plot(g["radius"], g["certified_accuracy"] * 100, styles[sigma], color=colors[family],
                label=f"{family}, σ={sigma:g}")
    for sigma, r in cert.groupby("sigma")["max_radius"].first().items():
        ax.axvline(r, color="grey", lw=0.8, ls=":")
        ax.annotate(f"max radius at σ={sigma:g}", (r, 98), fontsize=7, rotation=90, va="top", ha="right", color="grey")
    ax.set(xlabel="L2 radius (pixel units)", ylabel="certified accuracy (%)", ylim=(-2, 102), title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def empirical_check_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """PGD-EOT (L2, ε = factor × certified radius) against each smoothed classifier: flips beside the certificate."""
    status = {True: "pass", False: "FAIL", None: "n/a (attack beyond the certificate)"}
    rows = []
    for rec in records:
        key = {"model_id": rec["model_id"], "sigma": rec["sigma"]}
        for s in rec["empirical_check"]["summary"]:
            rows.append({**key, "factor": s["factor"], "attacked (certified-correct)": s["n_attacked"],
                         "flipped": s["n_flipped"], "abstained": s["n_abstained"],
                         "flipped fraction": s["flipped_fraction"], "allowed flips": s["allowed_flips"],
                         "check": status[s["passed"]]})
        if not rec["empirical_check"]["summary"]:
            rows.append({**key, "check": "n/a (no certified-correct image)"})
    return pd.DataFrame(rows)


def sanity_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every sanity check of every certification record (failures first)."""
    rows = [{"model_id": r["model_id"], "sigma": r["sigma"], "check": c["check"],
             "status": {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]}
            for r in records for c in r["sanity_checks"]]
    out = pd.DataFrame(rows, columns=["model_id", "sigma", "check", "status"])
    order = {"FAIL": 0, "pass": 1, "n/a": 2}
    return out.sort_values(["status", "model_id"], key=lambda s: s.map(order) if s.name == "status" else s)


def _beats(best: pd.DataFrame, a: str, b: str, radii: tuple[float, ...], n: int) -> tuple[str, str]:
    """Verdict and evidence of 'a is certified more accurately than b at every radius' from best-over-σ.

    Certified accuracies are fractions of ``n`` images: each radius is one comparison of
    `robust_mim.evaluation.verdict` (its noise allowance), and the claim holds when every radius does.
    """
    if a not in best.index or b not in best.index:
        missing = [f for f in (a, b) if f not in best.index]
        return NOT_RUN, f"no records for {', '.join(missing)}"
    cols = [f"r={r:g}" for r in radii if f"r={r:g}" in best.columns]
    pairs = [(c, best.at[a, c], best.at[b, c]) for c in cols if pd.notna(best.at[a, c]) and pd.notna(best.at[b, c])]
    if not pairs:
        return NOT_RUN, "every radius lies beyond the largest radius N can certify"
    found = [(c, compare(x, y, n)) for c, x, y in pairs]
    evidence = "; ".join(f"{c}: {cmp.text()}" for c, cmp in found) + f" on {n} images"
    untested = [c for c in cols if c not in {p[0] for p in pairs}]
    evidence += f" (beyond the max radius: {', '.join(untested)})" if untested else ""
    return verdict([cmp for _, cmp in found]), evidence


def _sigma_tradeoff(cert: pd.DataFrame, radii: tuple[float, ...] = TABLE_RADII) -> tuple[str, str]:
    """Cohen et al.: the smallest σ is best at r = 0, the largest σ at the largest table radius > 0 that
    every σ can certify (below each σ's max radius); ties count for the claim."""
    notes, ok = [], []
    for family, g in cert.groupby("family"):
        if g["sigma"].nunique() < 2:
            continue
        acc = g.set_index(["radius", "sigma"])["certified_accuracy"]
        common = [r for r in radii if 0 < r <= g["max_radius"].min()]
        if not common:
            continue
        small, large, r = g["sigma"].min(), g["sigma"].max(), max(common)
        at0, atr = acc.xs(0.0, level="radius"), acc.xs(r, level="radius")
        ok.append(at0[small] >= at0.max() and atr[large] >= atr.max())
        notes.append(f"{family}: r=0 σ={small:g} {at0[small] * 100:.1f} vs best {at0.max() * 100:.1f}; "
                     f"r={r:g} σ={large:g} {atr[large] * 100:.1f} vs best {atr.max() * 100:.1f}")
    if not ok:
        return NOT_RUN, "needs a family certified at two σ or more with a common radius > 0"
    return from_check(all(ok)), "; ".join(notes)


def claims(cert: pd.DataFrame, records: list[dict[str, Any]]) -> pd.DataFrame:
    """The paper's claims, each with one verdict of `robust_mim.evaluation.verdict` (column ``status``), from the records."""
    best, _ = best_over_sigma(cert)
    n = min((int(r["n_examples"]) for r in records), default=0)
    items = [
        ("DMAE + consistency beats Cohen RS at every radius (0.25-1.0)",
         *_beats(best, "DMAE + consistency", "Cohen RS", CLAIM_RADII, n)),
        ("DMAE pretraining beats MAE pretraining under the same Gaussian fine-tuning",
         *_beats(best, "DMAE + Gaussian FT", "MAE + Gaussian FT", CLAIM_RADII, n)),
        ("consistency regularization beats plain Gaussian fine-tuning of the DMAE encoder",
         *_beats(best, "DMAE + consistency", "DMAE + Gaussian FT", CLAIM_RADII, n)),
        ("σ trades accuracy for radius (small σ best at r=0, large σ at large r)", *_sigma_tradeoff(cert)),
    ]
    checks = [s for r in records for s in r["empirical_check"]["summary"] if s["passed"] is not None]
    if checks:
        flips = sum(s["n_flipped"] for s in checks)
        items.append(("certificates hold against PGD-EOT at the certified radius",
                      from_check(all(s["passed"] for s in checks)),
                      f"{flips} flips in {sum(s['n_attacked'] for s in checks)} attacked certified-correct images"))
    else:
        items.append(("certificates hold against PGD-EOT at the certified radius", NOT_RUN,
                      "no certified-correct image was attacked"))
    return pd.DataFrame(items, columns=["claim", "status", "evidence"])


# ----------------------------------------------------------------------------- the headline claim (claims.md)

CLAIM = "a DMAE-pretrained, consistency-fine-tuned base classifier certifies more than Cohen et al.'s"
PAPER_NUMBER = ("certified " + " / ".join(f"{PAPER_CIFAR10['DMAE + consistency'][r]:g}" for r in CLAIM_RADII)
                + " % vs " + " / ".join(f"{PAPER_CIFAR10['Cohen RS'][r]:g}" for r in CLAIM_RADII)
                + " % at r = " + " / ".join(f"{r:g}" for r in CLAIM_RADII))
PAPER_SCALE = PAPER_CIFAR10["DMAE + consistency"]["scale"]


def judge(results_dir: Path, profile: str, eps_255: float) -> pd.DataFrame:
    """The claims as [claim, ours, status] (certification: ``eps_255`` plays no part)."""
    cert = load_certifications(results_dir, profile)
    records = certification_records(results_dir, set(zip(cert["model_id"], cert["sigma"])))
    return claim_rows(claims(cert, records), "claim", "evidence", "status")
