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

from robust_mim.records import iter_records
from robust_mim.report import RecordsMissing, load_records
from robust_mim.worst_case import linf_attack_rows, worst_case_table

PAPER = "nim"
SWEEP = "sigma-sweep"
# table column -> evaluation of the shared suite (L∞)
COLUMNS = {"FGSM": "fgsm-linf", "PGD": "pgd-linf", "PGD-EOT": "pgd-linf-eot", "gray-box PGD": "pgd-linf-gray-box",
           "Square": "square-linf", "AutoAttack": "autoattack-linf"}
# the headline: per-example worst case over every L∞ attack run (`robust_mim.worst_case`), EOT and AutoAttack included
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
    for rec in iter_records(Path(results_dir) / "records"):
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
    out["n"] = sub.groupby("model_id")["n_examples"].max()
    out["clean"] = _at(sub, CLEAN_FROM, 0.0)
    for eps in eps_255:
        for label, evaluation in COLUMNS.items():
            out[f"{label} {eps:g}/255"] = _at(sub, (evaluation,), eps)
        out[f"{ROBUST} {eps:g}/255"] = worst_case_table(linf_attack_rows(sub), eps / 255)["accuracy"]
    failed = sub[sub["evaluation"] == "sanity"].groupby("model_id")["failed_checks"].first()
    out["failed sanity checks"] = failed.reindex(out.index).fillna("").replace("", "none")
    return out.round(1)


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """σ_test sweep rows: model_id, pretraining, σ_test·255, clean and PGD-EOT accuracy (%), ε·255, n."""
    sweep = df[df["evaluation"] == SWEEP]
    if sweep.empty:
        return pd.DataFrame(columns=["model_id", "pretraining", "sigma_255", "clean", "pgd_eot", "eps_255", "n"])
    keys = ["model_id", "pretraining", "sigma_255"]
    clean = sweep[sweep["eps"] == 0].set_index(keys)["accuracy"] * 100
    attacked = sweep[sweep["eps"] > 0].set_index(keys)
    out = pd.DataFrame({"clean": clean, "pgd_eot": attacked["accuracy"] * 100,
                        "eps_255": (attacked["eps"] * 255).round(3), "n": attacked["n_examples"]})
    return out.reset_index().sort_values(keys).reset_index(drop=True)


# ----------------------------------------------------------------------------- claims


def _tol(p_percent: float, n: float) -> float:
    """Noise allowance (%) of an accuracy on n examples: the shared sanity checks' tolerance."""
    from robust_mim.evaluation import tolerance

    return 100 * tolerance(min(max(p_percent / 100, 0.0), 1.0), int(n))


def _verdict(claim: str, ours: str, holds: bool | None) -> dict[str, str]:
    verdict = {True: "reproduced", False: "not reproduced", None: "not yet run"}[holds]
    return {"claim": claim, "paper (its scale)": PAPER_CLAIMS[claim], "ours (this scale)": ours,
            "verdict": f"{verdict} at this scale" if holds is not None else verdict}


def claim_de3_beats_plain(table: pd.DataFrame, eps_255: float) -> dict[str, str]:
    """De³ vs plain row of the same pretraining: robust accuracy (worst case) at ε, beyond noise, for every pair."""
    col, lines, holds = f"{ROBUST} {eps_255:g}/255", [], []
    for pretraining, rows in table.groupby("pretraining"):
        plain, de3 = rows[rows["defense"] == "plain"], rows[rows["defense"] == "De³"]
        if plain.empty or de3.empty or plain[col].isna().all() or de3[col].isna().all():
            continue
        a, b = de3[col].max(), plain[col].max()
        tol = _tol(b, plain["n"].iloc[0])
        holds.append(a > b + tol)
        lines.append(f"{pretraining}: De³ {a:.1f}% vs plain {b:.1f}% (± {tol:.1f})")
    if not holds:
        return _verdict("de3_beats_plain", f"needs a plain and a De³ model of one pretraining with {col}", None)
    text = f"{col}: " + "; ".join(lines) + f" — holds for {sum(holds)} of {len(holds)} pretrainings"
    return _verdict("de3_beats_plain", text, all(holds))


def claim_nim_beats_mae(table: pd.DataFrame, eps_255: float, nim: str = "NIM-gamma") -> dict[str, str]:
    """NIM (Γ) De³ vs MAE De³: robust accuracy (worst case) at ε, beyond noise."""
    col = f"{ROBUST} {eps_255:g}/255"
    de3 = table[table["defense"] == "De³"].groupby("pretraining")[col].max()
    if nim not in de3 or "MAE" not in de3 or pd.isna(de3[nim]) or pd.isna(de3["MAE"]):
        return _verdict("nim_beats_mae", f"needs De³ models with {nim} and MAE denoisers", None)
    tol = _tol(de3["MAE"], table["n"].max())
    text = f"{col}: De³ with {nim} {de3[nim]:.1f}% vs with MAE {de3['MAE']:.1f}% (± {tol:.1f})"
    return _verdict("nim_beats_mae", text, bool(de3[nim] > de3["MAE"] + tol))


def tradeoff_score(sweep: pd.DataFrame) -> pd.Series:
    """Per pretraining: mean over σ_test of (clean + PGD-EOT)/2 (%), a one-number summary of a trade-off curve."""
    return ((sweep["clean"] + sweep["pgd_eot"]) / 2).groupby(sweep["pretraining"]).mean()


def claim_gamma_beats_fixed(sweep: pd.DataFrame, better: str = "NIM-gamma", worse: str = "NIM-fixed") -> dict[str, str]:
    """Trade-off score of the Γ-sampled NIM vs fixed-σ NIM over the σ_test values both were swept at."""
    common = set(sweep.loc[sweep["pretraining"] == better, "sigma_255"]) & \
        set(sweep.loc[sweep["pretraining"] == worse, "sigma_255"])
    if not common:
        return _verdict("gamma_beats_fixed", f"needs σ_test sweeps of {better} and {worse} De³ models", None)
    score = tradeoff_score(sweep[sweep["sigma_255"].isin(common)])
    tol = _tol(score[worse], sweep["n"].max())
    text = (f"mean over σ_test·255 ∈ {sorted(common)} of (clean + PGD-EOT)/2: {better} {score[better]:.1f}% "
            f"vs {worse} {score[worse]:.1f}% (± {tol:.1f})")
    return _verdict("gamma_beats_fixed", text, bool(score[better] > score[worse] + tol))


def claim_sigma_tradeoff(sweep: pd.DataFrame, pretraining: str = "NIM-gamma") -> dict[str, str]:
    """Along the σ_test sweep: clean accuracy falls from the smallest to the largest σ_test and the best
    PGD-EOT accuracy at a larger σ_test exceeds the one at the smallest, both beyond noise."""
    curve = sweep[sweep["pretraining"] == pretraining].sort_values("sigma_255")
    if len(curve) < 2:
        return _verdict("sigma_tradeoff", f"needs a σ_test sweep (≥ 2 values) of a {pretraining} De³ model", None)
    lo, hi, n = curve.iloc[0], curve.iloc[-1], curve["n"].max()
    best = curve.iloc[1:].loc[curve["pgd_eot"].iloc[1:].idxmax()]
    clean_falls = lo["clean"] - hi["clean"] > _tol(lo["clean"], n)
    robust_rises = best["pgd_eot"] - lo["pgd_eot"] > _tol(lo["pgd_eot"], n)
    text = (f"{pretraining}: clean {lo['clean']:.1f}% at σ_test·255 = {lo['sigma_255']:g} → {hi['clean']:.1f}% at "
            f"{hi['sigma_255']:g}; PGD-EOT {lo['pgd_eot']:.1f}% → best {best['pgd_eot']:.1f}% at {best['sigma_255']:g}")
    return _verdict("sigma_tradeoff", text, bool(clean_falls and robust_rises))


def claims(table: pd.DataFrame, sweep: pd.DataFrame, eps_255: float) -> pd.DataFrame:
    """Every claim of the paper with our evidence and a verdict computed from the records."""
    return pd.DataFrame([claim_de3_beats_plain(table, eps_255), claim_nim_beats_mae(table, eps_255),
                         claim_gamma_beats_fixed(sweep), claim_sigma_tradeoff(sweep)])


# ----------------------------------------------------------------------------- figures


def plot_sigma_tradeoff(sweep: pd.DataFrame, title: str = "") -> plt.Figure:
    """The paper's key figure: (left) clean and PGD-EOT accuracy vs σ_test, one colour per pretraining;
    (right) the same points in the clean-vs-robust plane, labelled with σ_test·255."""
    from robust_mim.plots import style

    style()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(zip(sorted(sweep["pretraining"].unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name, curve in sweep.sort_values("sigma_255").groupby("pretraining"):
        c = colors[name]
        ax.plot(curve["sigma_255"], curve["clean"], "o-", color=c, label=f"{name}: clean")
        ax.plot(curve["sigma_255"], curve["pgd_eot"], "s--", color=c, label=f"{name}: PGD-EOT")
        bx.plot(curve["clean"], curve["pgd_eot"], "o-", color=c, label=name)
        for _, r in curve.iloc[[0, -1]].iterrows():  # label the ends of each curve with σ_test·255
            bx.annotate(f"σ={r['sigma_255']:g}", (r["clean"], r["pgd_eot"]), fontsize=7, color=c, xytext=(3, 3),
                        textcoords="offset points")
    eps = sweep["eps_255"].dropna().unique()
    ax.set(xlabel="σ_test (1/255)", ylabel="accuracy (%)", ylim=(-2, 102))
    bx.margins(0.15)
    bx.set(xlabel="clean accuracy (%)", ylabel=f"PGD-EOT accuracy at ε = {', '.join(f'{e:g}' for e in eps)}/255 (%)")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_robustness(table: pd.DataFrame, eps_255: float, title: str = "") -> plt.Figure:
    """Clean and robust accuracy (worst case, %) at ε per pretraining, plain fine-tuning beside De³."""
    from robust_mim.plots import style

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
        ax.set(title=col, xlabel="", ylim=(0, 102))
    axes[0].set_ylabel("accuracy (%)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
