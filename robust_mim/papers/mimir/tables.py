"""Tables, figures and claims of notebook 02 (paper 2: MIMIR, Xu et al.), from records only.

Models of the paper are those with ``mimir-adaptive`` records (rule ``attack_adaptive``); each
such record names the model's ``pretraining`` (scratch, mae, mimir-lam0, mimir). Their shared
``robustness`` records (rule ``attack_eval``) give clean accuracy and the AutoAttack-style
ensemble; the adaptive records give PGD-k, feature-space PGD and PGD-MI. Pretraining curves come
from the pretraining runs' ``metrics.jsonl`` (per-epoch means the engine logs). Nothing here
recomputes an attack: functions filter, pivot and compare.
"""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from robust_mim.reporting.leaderboard import autoattack_evaluation, autoattack_name
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.verdict import claim_rows, BETTER, INCONCLUSIVE, NOT_RUN, compare, outcome, verdict
from robust_mim.evaluation.worst_case import linf_attack_rows, overstatement, overstatement_flags, worst_case_table

ROLES = ("scratch", "mae", "mimir-lam0", "mimir")
ROLE_NAMES = {"scratch": "scratch + AT", "mae": "MAE + AT", "mimir-lam0": "MIMIR (λ=0) + AT", "mimir": "MIMIR + AT"}
ADAPTIVE_SANITY = "sanity-adaptive"

# CIFAR-10, L∞ ε = 8/255: clean and AutoAttack accuracy (%) of MIMIR-pretrained, PGD-AT fine-tuned ViTs,
# as reported by Xu et al. (MIMIR) and the official repository's README (github.com/xiaoyunxxy/MIMIR).
PAPER_CIFAR10 = [
    {"model": "ViT-T", "clean (%)": 84.82, "AutoAttack (%)": 52.96},
    {"model": "ViT-S", "clean (%)": 88.11, "AutoAttack (%)": 53.18},
    {"model": "ViT-B", "clean (%)": 89.30, "AutoAttack (%)": 54.55},
]
PAPER_SCALE = ("CIFAR-10 (50,000 training images, 32x32), MIMIR pretraining then PGD-AT fine-tuning "
               "(PGD-10, 8/255, step 2/255), ViT-T/S/B, CIFAR-10 test set, official AutoAttack (standard)")


# ----------------------------------------------------------------------------- loading


def load_mimir_records(results_dir: str | Path, profile: str) -> pd.DataFrame:
    """Every record row of the models that have MIMIR adaptive-attack records.

    Adds ``pretraining`` (the model's role), ``adaptive`` (row from rule attack_adaptive) and the
    adaptive attacks' ``param_steps`` / ``param_lam``. Raises `RecordsMissing` naming the command
    when there are no adaptive records.
    """
    df = load_records(results_dir, profile)
    adaptive = df["_path"].str.contains("/mimir-adaptive/", regex=False)
    if "pretraining" in df:  # other papers' records (e.g. NIM's σ sweeps) also name a pretraining
        df["pretraining"] = df["pretraining"].where(adaptive)
    if "pretraining" not in df or df["pretraining"].isna().all():
        raise RecordsMissing(f"no MIMIR adaptive-attack records under {results_dir}: run `snakemake --cores 8 all "
                             f"--configfile config/{profile}.yaml` (rule attack_adaptive; models list papers: [mimir])")
    roles = df.dropna(subset=["pretraining"]).groupby("model_id")["pretraining"].first()
    out = df[df["model_id"].isin(roles.index)].copy()
    out["adaptive"] = out["pretraining"].notna()
    out["pretraining"] = out["model_id"].map(roles)
    params = {p: json.loads(Path(p).read_text())["params"] for p in out.loc[out["adaptive"], "_path"].unique()}
    for key in ("steps", "lam"):
        out[f"param_{key}"] = out["_path"].map(lambda p, k=key: params.get(p, {}).get(k))
    return out


def _at_eps(df: pd.DataFrame, eps_255: float) -> pd.DataFrame:
    return df[(df["eps"] * 255).round(3) == round(float(eps_255), 3)] if "eps" in df else df.iloc[:0]


def _accuracy(df: pd.DataFrame, evaluation: str, eps_255: float) -> pd.Series:
    sub = _at_eps(df[df["evaluation"] == evaluation], eps_255)
    return sub.groupby("model_id")["accuracy"].first() * 100


def _adaptive_columns(df: pd.DataFrame) -> dict[str, str]:
    """Adaptive evaluation -> column label with the step counts that ran: PGD-k by k, then feature PGD, PGD-MI."""
    first = df[df["adaptive"] & (df["evaluation"] != ADAPTIVE_SANITY)].groupby("evaluation").first()
    plain = sorted((ev for ev in first.index if ev[4:].isdigit()), key=lambda ev: int(first.loc[ev, "param_steps"]))
    labels = {ev: f"PGD-{int(first.loc[ev, 'param_steps'])}" for ev in plain}
    for ev in sorted(set(first.index) - set(plain)):
        steps = int(first.loc[ev, "param_steps"])
        labels[ev] = f"feature PGD-{steps}" if ev == "pgd-feature" else \
            f"PGD-MI-{steps} (λ={first.loc[ev, 'param_lam']:g})"
    return labels


# ----------------------------------------------------------------------------- tables


def failed_checks(df: pd.DataFrame) -> pd.Series:
    """Per model: the failed sanity checks of its shared suite and of its adaptive attacks."""
    def union(names: pd.Series) -> str:
        return ", ".join(sorted({n.strip() for s in names.dropna() for n in s.split(",") if n.strip()}))
    return df.groupby("model_id")["failed_checks"].agg(union)


def headline_table(df: pd.DataFrame, eps_255: float = 8.0) -> pd.DataFrame:
    """Accuracy (%) per model at ε: clean, PGD-k (the paper's protocol), AutoAttack, adaptive attacks,
    the lowest of them (the strongest single attack per model), the headline ``robust accuracy``
    (per-example worst case over every L∞ attack, `robust_mim.evaluation.worst_case`), ``protocol flag`` (where a
    PGD-k is above it beyond noise), n and the failed sanity checks."""
    models = df.groupby("model_id")[["pretraining", "init", "method"]].first()
    table = pd.DataFrame(index=models.index)
    table["pretraining"] = models["pretraining"].map(ROLE_NAMES).fillna(models["pretraining"])
    table["clean"] = _accuracy(df, "pgd-linf", 0.0)
    columns = _adaptive_columns(df)
    for ev in [e for e in columns if e[4:].isdigit()]:
        table[columns[ev]] = _accuracy(df, ev, eps_255)
    table[autoattack_name(df)] = _accuracy(df, autoattack_evaluation(df), eps_255)
    for ev in [e for e in columns if not e[4:].isdigit()]:
        table[columns[ev]] = _accuracy(df, ev, eps_255)
    attacks = [c for c in table.columns if c not in ("pretraining", "clean")]
    table["strongest attack (min)"] = table[attacks].min(axis=1)
    table["robust accuracy (worst case)"] = worst_case_table(linf_attack_rows(df), eps_255 / 255)["accuracy"]
    table["n"] = linf_attack_rows(df).groupby("model_id")["n_examples"].max()  # attacked images (not a corruption record's)
    pgd = [columns[e] for e in columns if e[4:].isdigit()]
    protocol = table[pgd].max(axis=1) if pgd else pd.Series(float("nan"), index=table.index)
    table["protocol flag"] = overstatement_flags(protocol, table["robust accuracy (worst case)"], table["n"])
    table["failed sanity checks"] = failed_checks(df)
    rank = {r: i for i, r in enumerate(ROLES)}
    table = table.loc[sorted(table.index, key=lambda m: (rank.get(models.loc[m, "pretraining"], len(ROLES)), m))]
    return table.round(1)


def method_table(df: pd.DataFrame) -> pd.DataFrame:
    """How each model was trained: encoder's pretraining objective and the fine-tuning method's settings."""
    per_model = df[df["adaptive"]].groupby("model_id").first()
    out = pd.DataFrame(index=per_model.index)
    out["pretraining"] = per_model["pretraining"].map(ROLE_NAMES).fillna(per_model["pretraining"])
    out["init (pretraining run)"] = per_model["init"].fillna("—")
    records = {r["model_id"]: r for r in _adaptive_record_dicts(df)}
    out["pretraining objective"] = [_short(records[m].get("pretrain_objective")) for m in out.index]
    out["fine-tuning method"] = [_short(records[m].get("method_params")) for m in out.index]
    return out


def _short(settings: dict | None) -> str:
    if not settings:
        return "—"
    name = settings.get("name", "?")
    rest = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "name")
    return f"{name}({rest})"


def _adaptive_record_dicts(df: pd.DataFrame) -> list[dict[str, Any]]:
    paths = df.loc[df["evaluation"] == ADAPTIVE_SANITY, "_path"].dropna().unique()
    return [json.loads(Path(p).read_text()) for p in paths]


def paper_table(table: pd.DataFrame, scale_note: str) -> pd.DataFrame:
    """The paper's CIFAR-10 numbers beside ours (MIMIR + AT rows), each with the scale it was measured at."""
    rows = [{"source": "Xu et al. (MIMIR)", **r, "scale": PAPER_SCALE} for r in PAPER_CIFAR10]
    aa = [c for c in table.columns if "(ART)" in c or c.startswith("AutoAttack")]
    for model, row in table[table["pretraining"] == ROLE_NAMES["mimir"]].iterrows():
        rows.append({"source": "ours", "model": model, "clean (%)": row["clean"],
                     "AutoAttack (%)": row[aa[0]] if aa else math.nan,
                     "scale": f"{scale_note}; {int(row['n'])} test images; ensemble: {aa[0] if aa else 'not run'}"})
    return pd.DataFrame(rows).set_index(["source", "model"])


def sanity_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every sanity check of the MIMIR models (shared suite and adaptive attacks), failures first."""
    sub = df[df["evaluation"].isin(["sanity", ADAPTIVE_SANITY])]
    if sub.empty:
        return pd.DataFrame(columns=["model_id", "suite", "check", "status"])
    out = sub[["model_id", "evaluation", "check", "passed"]].rename(columns={"evaluation": "suite"})
    out["status"] = out["passed"].map({True: "pass", False: "FAIL"}).fillna("n/a (nothing to compare)")
    out["suite"] = out["suite"].map({"sanity": "shared suite", ADAPTIVE_SANITY: "adaptive attacks"})
    return out.drop(columns="passed").sort_values(["status", "model_id"], key=lambda s: s != "FAIL"
                                                   if s.name == "status" else s).reset_index(drop=True)


# ----------------------------------------------------------------------------- claims


def _role_value(table: pd.DataFrame, role: str, column: str) -> float | None:
    rows = table[table["pretraining"] == ROLE_NAMES[role]]
    if rows.empty or column not in rows or pd.isna(rows[column].iloc[0]):
        return None
    return float(rows[column].iloc[0])


WORST = "robust accuracy (worst case)"


def claims(table: pd.DataFrame, df: pd.DataFrame | None = None, metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims, each with one verdict of `robust_mim.evaluation.verdict` (held / not held / inconclusive
    (within noise) / not run at this scale).

    Robustness is judged on the per-example worst case (``robust accuracy (worst case)``); the
    AutoAttack number (the paper's protocol) is shown beside it with the overstatement flag. With the
    records ``df`` and the pretraining ``metrics``, adds the mechanism claim that the HSIC penalty lowers
    the latent's dependence on x′ during pretraining.
    """
    aa = next((c for c in table.columns if "(ART)" in c or c.startswith("AutoAttack")), None)
    n = int(table["n"].min()) if len(table) else 0
    specs = [
        ("MIMIR + AT is more robust than scratch + AT (worst case, 8/255)", "mimir", "scratch", WORST),
        ("MIMIR + AT is more robust than MAE + AT (worst case, 8/255)", "mimir", "mae", WORST),
        ("the HSIC term adds robustness: MIMIR + AT beats MIMIR (λ=0) + AT (worst case)", "mimir", "mimir-lam0", WORST),
        ("MIMIR + AT has higher clean accuracy than scratch + AT", "mimir", "scratch", "clean"),
    ]
    rows = [_compare_claim(table, text, a, b, col, n, aa) for text, a, b, col in specs]
    rows.append(_adaptive_claim(table, aa, n))
    near = _near_chance(table, chance_level(df) if df is not None else None, n)
    if near:
        rows = [{**r, "ours": f"{r['ours']}; {near}", "verdict": INCONCLUSIVE} if r["verdict"] != NOT_RUN else r
                for r in rows]
    if df is not None and metrics is not None:
        rows = pretraining_claims(df, metrics) + rows
    return pd.DataFrame(rows)


def chance_level(df: pd.DataFrame) -> float | None:
    """1/K as the shared sanity check recorded it (None when absent)."""
    sub = df[(df["evaluation"] == "sanity") & (df.get("check") == "large_eps_accuracy_at_chance")] \
        if "check" in df else df.iloc[:0]
    values = [d["chance"] for d in sub.get("details", []) if isinstance(d, dict) and "chance" in d]
    return float(values[0]) if values else None


def _near_chance(table: pd.DataFrame, chance: float | None, n: int) -> str:
    """A reason when MIMIR + AT's clean accuracy is within noise of chance (the comparisons are then vacuous)."""
    clean = _role_value(table, "mimir", "clean")
    if chance is None or clean is None:
        return ""
    c = compare(clean, 100 * chance, n)
    return f"MIMIR + AT is near chance: clean {c.text()} vs chance" if c.outcome != BETTER else ""


def pretraining_claims(df: pd.DataFrame, metrics: pd.DataFrame, last: int = 5) -> list[dict[str, Any]]:
    """HSIC over the last ``last`` epochs, MIMIR below MIMIR (λ=0) by more than 2 standard errors of the epoch
    means: as trained (the penalty's estimator, ``hsic``) and as measured (bounded nHSIC, ``hsic_bounded``)."""
    inits = df[df["adaptive"]].groupby("pretraining")["init"].first()
    rows = []
    for key, what in (("hsic", "its training estimator (CCA)"), ("hsic_bounded", "the bounded nHSIC(z, x')")):
        text = f"the HSIC penalty lowers {what} below MIMIR (λ=0) in pretraining (mean of the last epochs)"
        if not {"mimir", "mimir-lam0"} <= set(inits.index) or key not in metrics:
            rows.append({"claim": text, "ours": "—", "verdict": NOT_RUN})
            continue
        a, b = (metrics.loc[metrics["run"] == inits[r], key].tail(last) for r in ("mimir", "mimir-lam0"))
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else math.inf
        diff = b.mean() - a.mean()
        rows.append({"claim": text, "ours": f"{a.mean():.4g} vs {b.mean():.4g} over the last {len(a)} epochs "
                                            f"({-diff:+.3g}, noise ±{2 * se:.3g})",
                     "verdict": verdict([outcome(diff, 2 * se)])})
    return rows


def _compare_claim(table: pd.DataFrame, text: str, role_a: str, role_b: str, column: str, n: int,
                   protocol: str | None) -> dict[str, Any]:
    """``role_a`` above ``role_b`` in ``column``; for the worst case, the paper's protocol column beside it."""
    c = compare(_role_value(table, role_a, column), _role_value(table, role_b, column), n)
    if c.outcome is None:
        return {"claim": text, "ours": "—", "verdict": NOT_RUN}
    ours = f"{column}: {c.text()}"
    if column == WORST and protocol:
        pa, pb = _role_value(table, role_a, protocol), _role_value(table, role_b, protocol)
        flags = [f for f in (overstatement(p, w, n) for p, w in ((pa, c.a), (pb, c.b)) if p is not None) if f]
        ours += f" [paper protocol, {protocol}: {pa if pa is not None else float('nan'):.1f} vs " \
                f"{pb if pb is not None else float('nan'):.1f}{'; ' + '; '.join(flags) if flags else ''}]"
    return {"claim": text, "ours": ours, "verdict": verdict([c])}


def _adaptive_claim(table: pd.DataFrame, aa: str | None, n: int) -> dict[str, Any]:
    text = "adaptive attacks (feature PGD, PGD-MI) are not stronger against MIMIR + AT than PGD / AutoAttack-style"
    adaptive = [c for c in table.columns if c.startswith(("feature PGD", "PGD-MI"))]
    standard = [c for c in table.columns if c.startswith("PGD-") and not c.startswith("PGD-MI")] + ([aa] if aa else [])
    vals_a = [v for v in (_role_value(table, "mimir", c) for c in adaptive) if v is not None]
    vals_s = [v for v in (_role_value(table, "mimir", c) for c in standard) if v is not None]
    if not vals_a or not vals_s:
        return {"claim": text, "ours": "—", "verdict": NOT_RUN}
    c = compare(min(vals_a), min(vals_s), n)
    return {"claim": text, "ours": f"strongest adaptive vs strongest standard: {c.text()}",
            "verdict": verdict([c], at_least=True)}


# ----------------------------------------------------------------------------- figures


def pretrain_runs(df: pd.DataFrame) -> list[str]:
    """Pretraining run ids the MIMIR models start from (their ``init``)."""
    return sorted(df["init"].dropna().unique()) if "init" in df else []


def load_pretrain_metrics(results_dir: str | Path, runs: list[str]) -> pd.DataFrame:
    """Per-epoch metrics of pretraining runs (``<results_dir>/pretrain/<run>/metrics.jsonl``), per run × epoch."""
    frames = []
    for run in runs:
        path = Path(results_dir) / "pretrain" / run / "metrics.jsonl"
        if not path.exists():
            raise RecordsMissing(f"no pretraining metrics at {path}: run the pretrain_mim rule for '{run}'")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        frames.append(pd.DataFrame(rows).assign(run=run))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "epoch"])


def pretraining_curves(metrics: pd.DataFrame, title: str = "") -> plt.Figure:
    """Reconstruction loss of every run, and MIMIR's HSIC terms (training estimator, bounded nHSIC) per epoch."""
    from robust_mim.reporting.plots import style

    style()
    panels = [("recon", "reconstruction loss (masked patches)"), ("hsic", "HSIC penalty estimator (training)"),
              ("hsic_bounded", "nHSIC(z, x′) ∈ [0, 1] (logged)")]
    panels = [(k, t) for k, t in panels if k in metrics and metrics[k].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for run, sub in metrics.dropna(subset=[key]).groupby("run"):
            ax.plot(sub["epoch"], sub[key], marker="o", ms=3, label=run)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def robust_accuracy_by_pretraining(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Grouped bars: accuracy (%) per pretraining (x) for clean and every attack (colours)."""
    from robust_mim.reporting.plots import style

    style()
    cols = [c for c in table.select_dtypes("number").columns if c != "n"]  # accuracies; not flags or labels
    long = table.reset_index().melt(id_vars=["model_id", "pretraining"], value_vars=cols,
                                    var_name="evaluation", value_name="accuracy (%)")
    long["x"] = long["pretraining"].str.replace(" + AT", "\n+ AT") + "\n(" + long["model_id"] + ")"
    long["evaluation"] = long["evaluation"].map(lambda e: textwrap.fill(e, 48))  # AutoAttack's name is long
    fig, ax = plt.subplots(figsize=(max(6.4, 2.2 * table.shape[0]), 5.6))
    import seaborn as sns

    sns.barplot(data=long, x="x", y="accuracy (%)", hue="evaluation", ax=ax)
    ax.set_xlabel("")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    # below the axes: to their right the legend took the width the group labels need (they overlapped)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the headline claim (claims.md)

CLAIM = "MIMIR pretraining + PGD-AT fine-tuning beats adversarial training from scratch"
PAPER_NUMBER = (f"{PAPER_CIFAR10[0]['model']}: {PAPER_CIFAR10[0]['clean (%)']} % clean / "
                f"{PAPER_CIFAR10[0]['AutoAttack (%)']} % AutoAttack at 8/255")


def judge(results_dir: Path, profile: str, eps_255: float) -> pd.DataFrame:
    """The claims at ``eps_255`` as [claim, ours, status] (with the records: the near-chance rule, as notebook 02)."""
    df = load_mimir_records(results_dir, profile)
    return claim_rows(claims(headline_table(df, eps_255), df), "claim", "ours", "verdict")
