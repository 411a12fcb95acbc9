"""Tables, figures and claims of notebook 05 (paper 5: DAT, Mao et al., NeurIPS 2022), from records only.

Three kinds of records feed it: the shared robustness suite of every model listing paper ``dat``
(``records/<model>/robustness/*.json``), its corruption benchmark (``records/<model>/corruption/
corruption.json``, evaluation ``corruption``: one row per corruption × severity), and the record of
each VQ autoencoder (``records/<vq>/vq/vq.json``, evaluation ``vq-reconstruction``). Three corruption
numbers, each labelled as what it is: the unnormalised mean corruption error (a plain error rate, from the
records), the corruption error relative to the profile's standard model trained from scratch (computed here
from the per-cell errors, 100 = that model), and — only where the records hold it, ImageNet-C at
severities 1–5 — the paper's mCE, normalised by AlexNet's errors (Hendrycks & Dietterich). Only the last
is the number the paper reports. Nothing here evaluates a model.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from robust_mim.corruption_benchmark import mean_corruption_error
from robust_mim.corruptions import CORRUPTION_NAMES
from robust_mim.notebook import resolve_dir
from robust_mim.records import iter_records
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.verdict import claim_rows, BETTER, WITHIN, WORSE, compare, verdict

PAPER = "dat"
CORRUPTION = "corruption"
VQ = "vq-reconstruction"
METHOD_LABELS = {"standard": "standard", "pgd_at": "PGD-AT", "dat": "DAT"}
# the three corruption columns of `summary_table`: only MCE_ALEXNET is the paper's mCE
UNNORMALISED = "mean corruption error, unnormalised (%)"
RELATIVE = "corruption error vs standard (%)"
MCE_ALEXNET = "mCE, AlexNet-normalised (%)"

# What the paper and its official code report, and at which scale (arXiv:2209.07735; numbers of the released
# models from github.com/alibaba/easyrobust, examples/imageclassification/imagenet/dat/README.md).
PAPER_SCALE = ("ImageNet-1k at 224×224; DAT's discrete space is a VQGAN pretrained on ImageNet (f = 8, 16384 codes); "
               "one L2 ascent step of ε = 0.1 at the quantized image, re-quantized; ImageNet-C (15 corruptions × 5 "
               "severities) mCE in %, normalised by AlexNet's errors; Stylized-ImageNet top-1 accuracy")
PAPER_RESULTS = pd.DataFrame([
    {"model (DAT-trained)": "ResNet-50", "ImageNet clean (%)": 76.52, "ImageNet-C mCE ↓": 74.16, "Stylized-ImageNet (%)": 10.8},
    {"model (DAT-trained)": "ViT-B/16", "ImageNet clean (%)": 81.46, "ImageNet-C mCE ↓": 44.65, "Stylized-ImageNet (%)": 23.13},
    {"model (DAT-trained)": "MAE-ViT-H", "ImageNet clean (%)": 87.02, "ImageNet-C mCE ↓": 31.40, "Stylized-ImageNet (%)": 32.77},
]).set_index("model (DAT-trained)")
PAPER_CLAIMS = {
    "clean": "DAT improves clean accuracy over standard training (unlike pixel-space adversarial training)",
    "mce": "DAT lowers the corruption error over standard training (the paper: mCE on ImageNet-C)",
}


# ----------------------------------------------------------------------------- loading


def role(init: str | None, method: str | None) -> str:
    """Row label from the training recipe: 'standard', 'PGD-AT', 'DAT', or '<INIT> + fine-tune' / '<INIT> + DAT'."""
    label = METHOD_LABELS.get(method or "", method or "?")
    if not isinstance(init, str) or not init:
        return label
    return f"{init.upper()} + {'fine-tune' if method == 'standard' else label}"


def dat_models(results_dir: str | Path) -> pd.DataFrame:
    """One row per model listing paper dat: model_id, role, init, method, vq, epochs (from its records)."""
    meta: dict[str, dict[str, Any]] = {}
    for rec in iter_records(resolve_dir(results_dir) / "records"):
        if PAPER not in (rec.get("paper") or []) or rec["evaluation"] == VQ:
            continue
        row = meta.setdefault(rec["model_id"], {"model_id": rec["model_id"], "init": rec.get("init"),
                                                "method": rec.get("method"), "vq": None, "epochs": None})
        if rec["evaluation"] == CORRUPTION:
            row.update(vq=rec.get("vq"), epochs=rec.get("epochs"))
    df = pd.DataFrame(list(meta.values()), columns=["model_id", "init", "method", "vq", "epochs"])
    df.insert(1, "role", [role(i, m) for i, m in zip(df["init"], df["method"])])
    order = {"standard": 0, "pgd_at": 1, "dat": 2}  # from scratch first, then per init: reference before DAT
    df["_order"] = [(i if isinstance(i, str) else "", order.get(m, 3), mid)
                    for i, m, mid in zip(df["init"], df["method"], df["model_id"])]
    return df.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def load_dat(results_dir: str | Path, profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all records as a DataFrame, `dat_models`); RecordsMissing naming the command when there are none."""
    target = f"results/{profile}/notebooks/05_dat.ipynb"
    df = load_records(results_dir, profile, target=target)
    models = dat_models(results_dir)
    if models.empty:
        raise RecordsMissing(f"no records of paper dat under {results_dir}/records: list dat in some finetune runs' "
                             f"papers and run `snakemake --cores 8 {target} --configfile config/{profile}.yaml`")
    return df, models


def baseline_model(models: pd.DataFrame) -> str | None:
    """The standard-training model from scratch (the reference of the relative corruption error), or None."""
    rows = models[models["init"].isna() & (models["method"] == "standard")]
    return rows["model_id"].iloc[0] if len(rows) else None


# ----------------------------------------------------------------------------- corruption errors


def corruption_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of the corruption records: model_id, corruption, severity, error, n_examples."""
    sub = df[df["evaluation"] == CORRUPTION]
    cols = ["model_id", "corruption", "severity", "error", "n_examples"]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    out = sub[cols].copy()
    out["severity"] = out["severity"].astype(int)
    return out.reset_index(drop=True)


def error_table(cells: pd.DataFrame, model: str) -> dict[str, dict[int, float]]:
    """{corruption: {severity: error}} of one model (the input of `mean_corruption_error`)."""
    sub = cells[cells["model_id"] == model]
    return {c: dict(zip(g["severity"], g["error"])) for c, g in sub.groupby("corruption")}


def relative_error(cells: pd.DataFrame, model: str, baseline: str | None) -> float:
    """Corruption error (%) of ``model`` relative to ``baseline``: mean over corruptions of Σ_s E / Σ_s E_base
    × 100 (the mCE formula with our standard model in AlexNet's place: 100 = as robust as the baseline)."""
    if baseline is None or model not in set(cells["model_id"]) or baseline not in set(cells["model_id"]):
        return float("nan")
    try:
        return 100 * mean_corruption_error(error_table(cells, model), error_table(cells, baseline))
    except Exception:  # noqa: BLE001 - a baseline with zero error on some corruption cannot normalise
        return float("nan")


def _at(df: pd.DataFrame, evaluation: str, eps: float) -> pd.Series:
    """Accuracy (%) per model of ``evaluation`` at ε (pixel units)."""
    sub = df[(df["evaluation"] == evaluation) & ((df["eps"] - eps).abs() < 1e-9)] if "eps" in df else df.iloc[:0]
    return sub.groupby("model_id")["accuracy"].min() * 100


def _failed(df: pd.DataFrame) -> pd.Series:
    """Per model: the failed sanity checks of any of its records (comma-separated), else 'none'."""
    names = df[["model_id", "failed_checks"]].dropna()
    names = names.assign(check=names["failed_checks"].astype(str).str.split(", ")).explode("check")
    names = names[names["check"].str.strip().ne("")]
    return names.groupby("model_id")["check"].agg(lambda s: ", ".join(sorted(set(s))))


def summary_table(df: pd.DataFrame, models: pd.DataFrame, headline_eps_255: float = 8,
                  l2_eps: list[float] | None = None) -> pd.DataFrame:
    """The paper's comparison at our scale, one row per model.

    Columns: role, epochs, n (corrupted test images), clean accuracy, `UNNORMALISED` (mean over corruptions
    of the error averaged over severities), `RELATIVE` (100 = the standard model from scratch), `MCE_ALEXNET`
    (only when some record holds it: ImageNet-C at severities 1–5), PGD L∞ at the headline ε, PGD L2 at
    each radius, failed sanity checks (robustness suite and corruption record). ``attrs``: the baseline
    model and the corruption benchmark (``corruption_benchmark`` of the records).
    """
    cells, base = corruption_cells(df), baseline_model(models)
    corr = df[df["evaluation"] == CORRUPTION].groupby("model_id")
    out = models.set_index("model_id")[["role", "epochs"]].copy()
    out["n"] = corr["n_examples"].first()
    out["clean acc (%)"] = (1 - corr["clean_error"].first()) * 100 if "clean_error" in df else float("nan")
    by_corruption = cells.groupby(["model_id", "corruption"])["error"].mean()  # mean over severities
    out[UNNORMALISED] = by_corruption.groupby("model_id").mean() * 100
    out[RELATIVE] = [relative_error(cells, m, base) for m in out.index]
    if "mCE_alexnet" in df and df["mCE_alexnet"].notna().any():
        out[MCE_ALEXNET] = corr["mCE_alexnet"].first().astype(float) * 100
    out[f"PGD L∞ {headline_eps_255:g}/255 (%)"] = _at(df, "pgd-linf", headline_eps_255 / 255)
    l2_rows = df.loc[df["evaluation"] == "pgd-l2", "eps"] if "eps" in df else []
    l2 = l2_eps if l2_eps is not None else sorted({e for e in l2_rows if e > 0})
    for eps in l2:
        out[f"PGD L2 {eps:g} (%)"] = _at(df, "pgd-l2", eps)
    out["failed sanity checks"] = _failed(df[df["model_id"].isin(out.index)]).reindex(out.index).fillna("none")
    out.attrs["baseline"] = base
    out.attrs["benchmark"] = ", ".join(sorted(set(df.get("corruption_benchmark", pd.Series(dtype=str)).dropna())))
    return out.round(2)


def per_corruption_table(df: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Error (%) per corruption (rows, benchmark order) × model role (columns), averaged over severities."""
    cells = corruption_cells(df).merge(models[["model_id", "role"]], on="model_id")
    table = cells.pivot_table(index="corruption", columns="role", values="error", aggfunc="mean") * 100
    table = table.reindex([c for c in CORRUPTION_NAMES if c in table.index])
    table = table[[r for r in models["role"] if r in table.columns]]
    table.loc["mean"] = table.mean()
    return table.round(1)


def per_cell_html(df: pd.DataFrame, models: pd.DataFrame) -> str:
    """A collapsed ``<details>`` block: error (%) of every corruption × severity cell per model."""
    cells = corruption_cells(df).merge(models[["model_id", "role"]], on="model_id")
    table = cells.pivot_table(index=["corruption", "severity"], columns="role", values="error", aggfunc="mean") * 100
    order = [c for c in CORRUPTION_NAMES if c in table.index.get_level_values(0)]
    table = table.reindex(order, level=0)[[r for r in models["role"] if r in table.columns]].round(1)
    summary = f"error (%) per corruption × severity ({len(table)} cells per model) — click to expand"
    return f"<details><summary>{html.escape(summary)}</summary>{table.to_html()}</details>"


# ----------------------------------------------------------------------------- VQ autoencoders


def vq_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per VQ autoencoder: test PSNR (dB) beside the constant-mean-image PSNR, codebook usage."""
    sub = df[df["evaluation"] == VQ]
    cols = ["psnr", "mean_image_psnr", "usage", "perplexity", "codes_used", "n_images"]
    if sub.empty:
        return pd.DataFrame(columns=cols + ["failed sanity checks"])
    out = sub.set_index("model_id")[[c for c in cols if c in sub]].copy()
    out["failed sanity checks"] = sub.set_index("model_id")["failed_checks"].replace("", "none")
    out.index.name = "vq"
    return out.round(3)


def vq_settings(results_dir: str | Path) -> pd.DataFrame:
    """Architecture and training settings of every VQ record (its ``params``)."""
    rows = [{"vq": r["model_id"], **r["params"]} for r in iter_records(resolve_dir(results_dir) / "records")
            if r["evaluation"] == VQ]
    return pd.DataFrame(rows).set_index("vq") if rows else pd.DataFrame()


def reconstruction_images(results_dir: str | Path, vq_ids: list[str]) -> dict[str, Path]:
    """PNG of originals above reconstructions of each VQ run (written by rule train_vq), where it exists."""
    paths = {v: Path(results_dir) / "dat" / "vq" / v / "reconstructions.png" for v in vq_ids}
    return {v: p for v, p in paths.items() if p.is_file()}


def plot_reconstructions(path: str | Path, title: str = "") -> plt.Figure:
    """The PNG of rule ``train_vq`` (test images in the top half above their reconstructions Q(x) in the
    bottom half), redrawn with its rows labelled ``original`` and ``reconstruction Q(x)``."""
    image = plt.imread(str(path))  # [H, W, C]: two rows of tiles
    height = image.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.0, image.shape[1] / 40), max(2.4, height / 40)))
    ax.imshow(image, interpolation="nearest")
    ax.set_yticks([height / 4, 3 * height / 4], ["original", "reconstruction\nQ(x)"], fontsize=9)
    ax.set_xticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- figure


def plot_corruption_errors(df: pd.DataFrame, models: pd.DataFrame, title: str = "") -> plt.Figure:
    """Left: error (%) per corruption (one bar per model); right: mean error (%) against severity."""
    from robust_mim.reporting import plots

    plots.style()
    cells = corruption_cells(df).merge(models[["model_id", "role"]], on="model_id")
    cells["error (%)"] = cells["error"] * 100
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    by_corr = cells.groupby(["corruption", "role"], as_index=False)["error (%)"].mean()
    pivot = by_corr.pivot(index="corruption", columns="role", values="error (%)")
    pivot = pivot.reindex([c for c in CORRUPTION_NAMES if c in pivot.index])
    pivot[[r for r in models["role"] if r in pivot.columns]].plot.bar(ax=left, width=0.8, legend=False)
    left.set_ylabel("error (%), mean over severities")
    left.set_xlabel("")
    left.set_ylim(0, 100)
    by_sev = cells.groupby(["severity", "role"], as_index=False)["error (%)"].mean()
    for r in [r for r in models["role"] if r in set(by_sev["role"])]:
        part = by_sev[by_sev["role"] == r]
        right.plot(part["severity"], part["error (%)"], marker="o", label=r)
    right.set_xlabel("severity")
    right.set_ylabel("mean error (%)")
    right.set_xticks(sorted(by_sev["severity"].unique()))
    right.set_ylim(0, 100)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- claims


def _pairs(summary: pd.DataFrame, models: pd.DataFrame) -> list[tuple[str, str]]:
    """(DAT model, its reference): DAT from scratch vs standard; <init> + DAT vs <init> + fine-tune."""
    by = models.set_index("model_id")
    out = []
    for m in by.index[by["method"] == "dat"]:
        init = by.loc[m, "init"] if isinstance(by.loc[m, "init"], str) else ""
        same = by[(by["method"] == "standard") & (by["init"].fillna("") == init)]
        if len(same) and m in summary.index:
            out.append((m, same.index[0]))
    return out


def _claim(key: str, column: str, summary: pd.DataFrame, models: pd.DataFrame, lower: bool) -> dict[str, str]:
    """Every DAT model against its reference in ``column``: one comparison each, one verdict (`robust_mim.evaluation.verdict`)."""
    lines, found = [], []
    for m, ref in _pairs(summary, models):
        n = summary.loc[m, "n"]
        c = compare(summary.loc[m, column], summary.loc[ref, column], int(n) if pd.notna(n) else 0,
                    lower_is_better=lower)
        if c.outcome is None:
            continue
        found.append(c)
        lines.append(f"{summary.loc[m, 'role']} vs {summary.loc[ref, 'role']} {c.text()}: {c.outcome}")
    if not found:
        ours = f"needs {column} of a DAT model and of its standard-training reference"
    else:
        counts = ", ".join(f"{sum(c.outcome == o for c in found)} {o}" for o in (BETTER, WITHIN, WORSE)
                           if any(c.outcome == o for c in found))
        ours = f"{column}: " + "; ".join(lines) + f" (DAT vs reference: {counts})"
    return {"claim": key, "paper (its scale)": PAPER_CLAIMS[key], "ours (this scale)": ours,
            "verdict": verdict(found)}


def claims(summary: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Each claim judged from the summary table: every DAT model against the standard-trained model with the
    same init; held when every DAT model is better beyond the noise allowance (`robust_mim.evaluation.verdict`)."""
    rows = [_claim("clean", "clean acc (%)", summary, models, lower=False),
            _claim("mce", UNNORMALISED, summary, models, lower=True)]
    return pd.DataFrame(rows)


def corruption_checks(results_dir: str | Path, model: str) -> list[dict[str, Any]]:
    """The sanity checks stored in ``model``'s corruption record (empty when it has none)."""
    return [c for r in iter_records(resolve_dir(results_dir) / "records")
            if r["model_id"] == model and r["evaluation"] == CORRUPTION for c in r.get("sanity_checks", [])]


# ----------------------------------------------------------------------------- the headline claim (claims.md)

CLAIM = "discrete adversarial training improves corruption robustness"
PAPER_NUMBER = "MAE-ViT-H + DAT: ImageNet-C mCE {:.2f} (Stylized-ImageNet {:.2f} %)".format(
    *PAPER_RESULTS.loc["MAE-ViT-H", ["ImageNet-C mCE ↓", "Stylized-ImageNet (%)"]])


def judge(results_dir: Path, profile: str, eps_255: float) -> pd.DataFrame:
    """The claims as [claim, ours, status], the headline (corruption robustness, mCE) first."""
    df, models = load_dat(results_dir, profile)
    c = claims(summary_table(df, models, eps_255), models)
    c = pd.concat([c[c["claim"] == "mce"], c[c["claim"] != "mce"]])
    return claim_rows(c, "paper (its scale)", "ours (this scale)", "verdict")
