"""Tables, figures and claims of notebook 01 (paper 1: NIM / De³, You et al., NeurIPS 2023), from records only.

Two kinds of records feed it: the shared robustness suite of every model listing paper ``nim``
(``records/<model>/robustness/*.json``: FGSM, PGD single draw, PGD-EOT and gray-box PGD for
randomized defenses, Square, sanity checks) and the σ_test sweep of every De³ model
(``records/<model>/sigma_sweep/sigma_sweep.json``, evaluation ``sigma-sweep``). Nothing here
attacks a model: functions filter, pivot and compare what the records say.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from robust_mim.notebook import resolve_dir
from robust_mim.records import iter_records
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.verdict import claim_rows, NOT_RUN, compare, verdict
from robust_mim.evaluation.worst_case import linf_attack_rows, overstatement, worst_case_table

PAPER = "nim"
SWEEP = "sigma-sweep"
# table column -> evaluation of the shared suite (L∞)
COLUMNS = {"FGSM": "fgsm-linf", "PGD": "pgd-linf", "PGD-EOT": "pgd-linf-eot", "gray-box PGD": "pgd-linf-gray-box",
           "Square": "square-linf", "AutoAttack": "autoattack-linf"}
# the headline: per-example worst case over every L∞ attack run (`robust_mim.evaluation.worst_case`), EOT and AutoAttack included
ROBUST = "robust accuracy"
CLEAN_FROM = ("pgd-linf", "fgsm-linf")  # ε = 0 rows of these are clean accuracy

# What the paper states, and at which scale (You et al., NeurIPS 2023, arXiv:2302.01056; settings from
# the official code github.com/youzunzhi/NIM-AdvDef: pretrain.py, finetune.py, eval_attack.py).
PAPER_SCALE = ("ImageNet-1k, ViT-B/16 MAE-style encoder-decoder pretrained 800 epochs (NIM: σ·255 ~ Γ(25, 3)), "
               "fine-tuned 100 epochs on denoised images (σ·255 ~ U(0, 30)); L∞ FGSM / PGD-10 / AutoAttack "
               "at ε = 4/255 on the ImageNet validation set")
PAPER_CLAIMS = {
    "de3_beats_plain": "De³ raises robust accuracy far above plain fine-tuning of the same pretrained encoder "
                       "(plain fine-tuned MIM/NIM models are not robust)",
    "nim_beats_mae": "as a De³ denoiser, NIM is superior to MAE (MIM) thanks to its denoising ability",
    "gamma_beats_fixed": "sampling σ per image (Γ(25, 3)/255) gives a better accuracy-robustness trade-off "
                         "than a fixed σ",
    "sigma_tradeoff": "the test-time σ is a knob: raising σ_test lowers clean accuracy and raises robust accuracy",
}


# ----------------------------------------------------------------------------- loading


def nim_models(results_dir: str | Path) -> pd.DataFrame:
    """One row per model listing paper nim: model_id, init, method, defense ('plain' | 'De³'), σ_test·255,
    pretraining: the name of the init run's objective (NIM-gamma, MAE, ...) as the σ_test sweep records
    state it for their denoiser; a pretraining run that denoises for no swept De³ model keeps its run id."""
    meta: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    for rec in iter_records(resolve_dir(results_dir) / "records"):
        if PAPER not in (rec.get("paper") or []):
            continue
        defense = rec.get("defense") or {}
        meta.setdefault(rec["model_id"], {
            "model_id": rec["model_id"], "init": rec.get("init"), "method": rec.get("method"),
            "defense": "De³" if defense.get("name") == "de3" else defense.get("name", "plain"),
            "sigma_test_255": defense.get("sigma_255")})
        if rec["evaluation"] == SWEEP and rec.get("denoiser"):
            labels[rec["denoiser"]] = rec.get("pretraining") or rec["denoiser"]
    df = pd.DataFrame(list(meta.values()), columns=["model_id", "init", "method", "defense", "sigma_test_255"])
    df["pretraining"] = [labels.get(i, i) if isinstance(i, str) else "none" for i in df["init"]]
    return df.sort_values(["pretraining", "defense"]).reset_index(drop=True)


def load_nim(results_dir: str | Path, profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all records as a DataFrame, `nim_models`); RecordsMissing naming the command when there are none."""
    df = load_records(results_dir, profile, target=f"results/{profile}/notebooks/01_nim_de3.ipynb")
    models = nim_models(results_dir)
    if models.empty:
        raise RecordsMissing(f"no records of paper nim under {results_dir}/records: list nim in some finetune runs' "
                             f"papers and run `snakemake --cores 8 results/{profile}/notebooks/01_nim_de3.ipynb "
                             f"--configfile config/{profile}.yaml`")
    return df, models


# ----------------------------------------------------------------------------- the table


def _at(df: pd.DataFrame, evaluations: tuple[str, ...] | list[str], eps_255: float) -> pd.Series:
    """Lowest accuracy (%) per model over ``evaluations`` at ε = eps_255/255."""
    sub = df[df["evaluation"].isin(evaluations) & ((df["eps"] * 255 - eps_255).abs() < 1e-6)]
    return sub.groupby("model_id")["accuracy"].min() * 100


def robustness_table(df: pd.DataFrame, models: pd.DataFrame, eps_255: list[float] | tuple[float, ...] = (4, 8)
                     ) -> pd.DataFrame:
    """The paper's table at our scale: accuracy (%) per model under each attack and ε, with sanity checks.

    Columns: pretraining, defense, σ_test, n, clean, ``<attack> <ε>/255`` for FGSM, PGD (single
    draw: the paper's protocol), PGD-EOT, gray-box PGD, Square and the official AutoAttack (rand on De³),
    ``robust accuracy <ε>/255`` (the per-example worst case over every L∞ attack run), and
    the failed sanity checks. NaN: not run for that model (EOT and gray-box need a randomized defense).
    """
    sub = df[df["model_id"].isin(models["model_id"])]
    out = models.set_index("model_id")[["pretraining", "defense", "sigma_test_255"]].copy()
    out["n"] = linf_attack_rows(sub).groupby("model_id")["n_examples"].max()  # attacked images (not a corruption record's)
    out["clean"] = _at(sub, CLEAN_FROM, 0.0)
    for eps in eps_255:
        for label, evaluation in COLUMNS.items():
            out[f"{label} {eps:g}/255"] = _at(sub, (evaluation,), eps)
        out[f"{ROBUST} {eps:g}/255"] = worst_case_table(linf_attack_rows(sub), eps / 255)["accuracy"]
    failed = sub[sub["evaluation"] == "sanity"].groupby("model_id")["failed_checks"].first()
    out["failed sanity checks"] = failed.reindex(out.index).fillna("").replace("", "none")
    return out.round(1)


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sweep rows: model_id, pretraining, degradation ('noise': σ_test varies; 'mask': an MAE-baseline De³
    whose mask ratio varies, σ_test = 0), σ_test·255, mask_ratio, clean and PGD-EOT accuracy (%), ε·255, n."""
    sweep = df[df["evaluation"] == SWEEP]
    if sweep.empty:
        return pd.DataFrame(columns=["model_id", "pretraining", "degradation", "sigma_255", "mask_ratio", "clean",
                                     "pgd_eot", "eps_255", "n"])
    sweep = sweep.assign(degradation=sweep["degradation"].fillna("noise") if "degradation" in sweep else "noise",
                         mask_ratio=sweep["mask_ratio"].fillna(0.0) if "mask_ratio" in sweep else 0.0)
    keys = ["model_id", "pretraining", "degradation", "sigma_255", "mask_ratio"]
    clean = sweep[sweep["eps"] == 0].set_index(keys)["accuracy"] * 100
    attacked = sweep[sweep["eps"] > 0].set_index(keys)
    out = pd.DataFrame({"clean": clean, "pgd_eot": attacked["accuracy"] * 100,
                        "eps_255": (attacked["eps"] * 255).round(3), "n": attacked["n_examples"]})
    return out.reset_index().sort_values(keys).reset_index(drop=True)


# ----------------------------------------------------------------------------- claims


def _verdict(claim: str, ours: str, verdict: str) -> dict[str, str]:
    return {"claim": claim, "paper (its scale)": PAPER_CLAIMS[claim], "ours (this scale)": ours, "verdict": verdict}


def claim_de3_beats_plain(table: pd.DataFrame, eps_255: float) -> dict[str, str]:
    """De³ vs plain row of the same pretraining: robust accuracy (worst case) at ε, for every pair
    (`robust_mim.evaluation.verdict`); the paper's protocol (PGD, one noise draw per gradient) shown beside it."""
    col, pgd, lines, found = f"{ROBUST} {eps_255:g}/255", f"PGD {eps_255:g}/255", [], []
    for pretraining, rows in table.groupby("pretraining"):
        plain, de3 = rows[rows["defense"] == "plain"], rows[rows["defense"] == "De³"]
        if plain.empty or de3.empty or plain[col].isna().all() or de3[col].isna().all():
            continue
        a, b = de3.loc[de3[col].idxmax()], plain.loc[plain[col].idxmax()]
        c = compare(a[col], b[col], a["n"], b["n"])
        found.append(c)
        lines.append(f"{pretraining}: De³ vs plain {c.text()}{_protocol(a, b, col, pgd)}")
    if not found:
        return _verdict("de3_beats_plain", f"needs a plain and a De³ model of one pretraining with {col}", NOT_RUN)
    return _verdict("de3_beats_plain", f"{col} (worst case): " + "; ".join(lines), verdict(found))


def _protocol(a: pd.Series, b: pd.Series, col: str, pgd: str) -> str:
    """The paper's protocol numbers beside the worst case, with the overstatement flag of each side."""
    if pgd not in a or pd.isna(a[pgd]) or pd.isna(b[pgd]):
        return ""
    flags = [f for f in (overstatement(r[pgd], r[col], int(r["n"])) for r in (a, b)) if f]
    return f" [paper protocol, PGD single draw: {a[pgd]:.1f} vs {b[pgd]:.1f}{'; ' + '; '.join(flags) if flags else ''}]"


def claim_nim_beats_mae(table: pd.DataFrame, eps_255: float, nim: str = "NIM-gamma") -> dict[str, str]:
    """NIM (Γ) De³ vs MAE De³: robust accuracy (worst case) at ε."""
    col, pgd = f"{ROBUST} {eps_255:g}/255", f"PGD {eps_255:g}/255"
    de3 = table[(table["defense"] == "De³") & table[col].notna()]
    best = {p: rows.loc[rows[col].idxmax()] for p, rows in de3.groupby("pretraining")}
    if nim not in best or "MAE" not in best:
        return _verdict("nim_beats_mae", f"needs De³ models with {nim} and MAE denoisers", NOT_RUN)
    a, b = best[nim], best["MAE"]
    c = compare(a[col], b[col], a["n"], b["n"])
    text = f"{col} (worst case): De³ with {nim} vs with MAE {c.text()}{_protocol(a, b, col, pgd)}"
    return _verdict("nim_beats_mae", text, verdict([c]))


def tradeoff_score(sweep: pd.DataFrame) -> pd.Series:
    """Per pretraining: mean over σ_test of (clean + PGD-EOT)/2 (%), a one-number summary of a trade-off curve."""
    return ((sweep["clean"] + sweep["pgd_eot"]) / 2).groupby(sweep["pretraining"]).mean()


def noise_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    """The rows of the sweep that vary σ_test (an MAE-baseline De³ varies its mask ratio instead)."""
    return sweep[sweep["degradation"] != "mask"] if "degradation" in sweep else sweep


def claim_gamma_beats_fixed(sweep: pd.DataFrame, better: str = "NIM-gamma", worse: str = "NIM-fixed") -> dict[str, str]:
    """Trade-off score of the Γ-sampled NIM vs fixed-σ NIM over the σ_test values both were swept at."""
    sweep = noise_sweep(sweep)
    common = set(sweep.loc[sweep["pretraining"] == better, "sigma_255"]) & \
        set(sweep.loc[sweep["pretraining"] == worse, "sigma_255"])
    if not common:
        return _verdict("gamma_beats_fixed", f"needs σ_test sweeps of {better} and {worse} De³ models", NOT_RUN)
    sub = sweep[sweep["sigma_255"].isin(common)]
    score, n = tradeoff_score(sub), sub.groupby("pretraining")["n"].min()
    c = compare(score[better], score[worse], n[better], n[worse])
    text = f"mean over σ_test·255 ∈ {sorted(common)} of (clean + PGD-EOT)/2: {better} vs {worse} {c.text()}"
    return _verdict("gamma_beats_fixed", text, verdict([c]))


def claim_sigma_tradeoff(sweep: pd.DataFrame, pretraining: str = "NIM-gamma") -> dict[str, str]:
    """Along the σ_test sweep: clean accuracy falls from the smallest to the largest σ_test and the best
    PGD-EOT accuracy at a larger σ_test exceeds the one at the smallest (two comparisons, one verdict)."""
    curve = noise_sweep(sweep)
    curve = curve[curve["pretraining"] == pretraining].sort_values("sigma_255")
    if len(curve) < 2:
        return _verdict("sigma_tradeoff", f"needs a σ_test sweep (≥ 2 values) of a {pretraining} De³ model", NOT_RUN)
    lo, hi = curve.iloc[0], curve.iloc[-1]
    best = curve.iloc[1:].loc[curve["pgd_eot"].iloc[1:].idxmax()]
    falls = compare(lo["clean"], hi["clean"], lo["n"], hi["n"])
    rises = compare(best["pgd_eot"], lo["pgd_eot"], best["n"], lo["n"])
    text = (f"{pretraining}: clean at σ_test·255 = {lo['sigma_255']:g} vs {hi['sigma_255']:g}: {falls.text()}; "
            f"PGD-EOT best at {best['sigma_255']:g} vs at {lo['sigma_255']:g}: {rises.text()}")
    return _verdict("sigma_tradeoff", text, verdict([falls, rises]))


def claims(table: pd.DataFrame, sweep: pd.DataFrame, eps_255: float) -> pd.DataFrame:
    """Every claim of the paper with our evidence and a verdict computed from the records."""
    return pd.DataFrame([claim_de3_beats_plain(table, eps_255), claim_nim_beats_mae(table, eps_255),
                         claim_gamma_beats_fixed(sweep), claim_sigma_tradeoff(sweep)])


# ----------------------------------------------------------------------------- figures


def plot_sigma_tradeoff(sweep: pd.DataFrame, title: str = "") -> plt.Figure:
    """The paper's key figure: clean and PGD-EOT accuracy against the test-time degradation, one colour per
    pretraining — σ_test for noise-based De³ (left), the mask ratio γ for an MAE-baseline De³ (a panel of its
    own, only where one was swept) — and (right) every point in the clean-vs-robust plane, ends labelled."""
    from robust_mim.reporting.plots import style

    style()
    sweep = sweep.assign(degradation=sweep["degradation"] if "degradation" in sweep else "noise")
    kinds = [k for k in ("noise", "mask") if (sweep["degradation"] == k).any()] or ["noise"]
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(5.2 * (len(kinds) + 1), 4.2))
    colors = dict(zip(sorted(sweep["pretraining"].unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, kind in zip(axes, kinds):
        _sweep_panel(ax, sweep[sweep["degradation"] == kind], kind, colors)
    _plane_panel(axes[-1], sweep, colors)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


SWEEP_AXES = {"noise": ("sigma_255", "σ_test (1/255): Gaussian noise added before denoising", "σ={:g}"),
              "mask": ("mask_ratio", "mask ratio γ (MAE-baseline De³, σ_test = 0)", "γ={:g}")}


def _sweep_panel(ax: plt.Axes, sweep: pd.DataFrame, kind: str, colors: dict[str, str]) -> None:
    """Clean (solid) and PGD-EOT (dashed) accuracy against the degradation level of one kind."""
    x, label, _ = SWEEP_AXES[kind]
    for name, curve in sweep.sort_values(x).groupby("pretraining"):
        ax.plot(curve[x], curve["clean"], "o-", color=colors[name], label=f"{name}: clean")
        ax.plot(curve[x], curve["pgd_eot"], "s--", color=colors[name], label=f"{name}: PGD-EOT")
    ax.set(xlabel=label, ylabel="accuracy (%)", ylim=(-2, 102))
    ax.legend(fontsize=7)


def _plane_panel(ax: plt.Axes, sweep: pd.DataFrame, colors: dict[str, str]) -> None:
    """Every sweep point in the clean-vs-robust plane; the two ends of each curve labelled with their level."""
    for (name, kind), curve in sweep.groupby(["pretraining", "degradation"]):
        x, _, fmt = SWEEP_AXES[kind]
        curve = curve.sort_values(x)
        ax.plot(curve["clean"], curve["pgd_eot"], "o-" if kind == "noise" else "s:", color=colors[name],
                label=name if kind == "noise" else f"{name} (mask ratio)")
        for _, r in curve.iloc[[0, -1]].iterrows():
            ax.annotate(fmt.format(r[x]), (r["clean"], r["pgd_eot"]), fontsize=7, color=colors[name],
                        xytext=(3, 3), textcoords="offset points")
    eps = sweep["eps_255"].dropna().unique()
    ax.set(xlabel="clean accuracy (%)", ylabel=f"PGD-EOT accuracy at ε = {', '.join(f'{e:g}' for e in eps)}/255 (%)",
           xlim=(-2, 102), ylim=(-2, 102))
    ax.legend(fontsize=7)


def plot_robustness(table: pd.DataFrame, eps_255: float, title: str = "") -> plt.Figure:
    """Clean and robust accuracy (worst case, %) at ε per pretraining, plain fine-tuning beside De³."""
    from robust_mim.reporting.plots import style

    style()
    cols = ["clean", f"{ROBUST} {eps_255:g}/255"]
    data = table.reset_index().melt(id_vars=["model_id", "pretraining", "defense"], value_vars=cols,
                                    var_name="evaluation", value_name="accuracy (%)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, col in zip(axes, cols):
        sub = data[data["evaluation"] == col].pivot_table(index="pretraining", columns="defense",
                                                          values="accuracy (%)", aggfunc="max")
        sub = sub[[d for d in ("plain", "De³") if d in sub] + [d for d in sub if d not in ("plain", "De³")]]
        sub.plot.bar(ax=ax, rot=0)
        for bars in ax.containers:  # the value on each bar: robust accuracies of ~1 % are invisible as bars
            ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=1)
        ax.set(title=col, xlabel="", ylim=(0, 102))
    axes[0].set_ylabel("accuracy (%)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the headline claim (claims.md)

CLAIM = ("De³ (denoise the input with the NIM-pretrained autoencoder, then classify) raises robust "
         "accuracy far above plain fine-tuning of the same encoder")
PAPER_NUMBER = "qualitative (robustness 'on par with adversarial training'); no single number quoted here"


def judge(results_dir: Path, profile: str, eps_255: float) -> pd.DataFrame:
    """The claims at ``eps_255`` (the profile's headline ε) as [claim, ours, status], the headline first."""
    df, models = load_nim(results_dir, profile)
    c = claims(robustness_table(df, models, [eps_255]), sweep_table(df), eps_255)
    return claim_rows(c, "paper (its scale)", "ours (this scale)", "verdict")
