"""Tables, claims and the figure of notebook 04 (Chen et al., CVPR 2020), built only from records.

Records used: ``chen-pgd-linf`` (rule attack_chen_pgd: TA and PGD ATA of a model or ensemble, with
its grid cell ``chen_task`` / ``chen_pretraining`` / ``chen_finetuning``), ``pretext`` (rule
pretrain_pretext: held-out pretext accuracy) and the shared robustness suite (rule attack_eval)
for the strongest white-box attack at the same ε. Nothing here recomputes a number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robust_mim.evaluation.verdict import claim_rows, NOT_RUN, compare, verdict
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.worst_case import linf_attack_rows, overstatement, worst_case_table
from robust_mim.papers.chen.tasks import task_label

PGD_EVALUATION = "chen-pgd-linf"
SELFIE = task_label("selfie")  # our Selfie is a simplified task: "selfie-like" in records, tables and claims
PAPER_TASKS = (SELFIE, "rotation", "jigsaw")
PRETRAININGS = ("P1", "P2", "P3")
FINETUNINGS = ("F1", "F2", "F3", "F4")
FINETUNING_NAMES = {"F1": "F1 partial standard", "F2": "F2 partial adversarial", "F3": "F3 full standard",
                    "F4": "F4 full adversarial"}
PAPER_SCALE = ("CIFAR-10 at 32x32, ResNet-50v2, TA = clean accuracy, ATA = PGD-20 accuracy at 8/255 "
               "(Chen et al., CVPR 2020)")
# (setting, task, pretraining, finetuning, kind) -> the paper's (TA, ATA) in %; None = not quoted here.
PAPER_NUMBERS: list[dict[str, Any]] = [
    {"setting": "end-to-end adversarial training (P1 + F4)", "task": "none", "pretraining": "P1", "finetuning": "F4",
     "kind": "single", "paper TA": 84.72, "paper ATA": 47.22, "paper source": "Table 1"},
    {"setting": "Selfie, adversarial pretraining + adversarial fine-tuning (P3 + F4); ours: the Selfie-like task",
     "task": SELFIE,
     "pretraining": "P3", "finetuning": "F4", "kind": "single", "paper TA": 86.02, "paper ATA": 51.05,
     "paper source": "Table 1 (+1.30 TA, +3.83 ATA over end-to-end AT, abstract)"},
    {"setting": "Rotation, P3 + F4", "task": "rotation", "pretraining": "P3", "finetuning": "F4", "kind": "single",
     "paper TA": None, "paper ATA": None, "paper source": "not quoted here"},
    {"setting": "Jigsaw, P3 + F4", "task": "jigsaw", "pretraining": "P3", "finetuning": "F4", "kind": "single",
     "paper TA": None, "paper ATA": None, "paper source": "not quoted here"},
    {"setting": "ensemble of fine-tuned models, one per task (P3 + F4)", "task": None, "pretraining": "P3",
     "finetuning": "F4", "kind": "ensemble", "paper TA": 86.1, "paper ATA": 54.7,
     "paper source": "≈, Fig. 1 (+3.59 ATA over Selfie P3 + F4, abstract)"},
]


# ----------------------------------------------------------------------------- per-model numbers
def scale_note(df: pd.DataFrame) -> str:
    """The scale note(s) of this notebook's records (what the numbers may be compared with)."""
    mine = df[df["evaluation"].isin([PGD_EVALUATION, "pretext"])]
    if mine.empty:
        return "no chen records"
    backbones = ", ".join(sorted(mine["backbone"].dropna().astype(str).unique()))
    return "; ".join(mine["scale_note"].dropna().unique()) + f" (paper 4 backbone: {backbones})"



def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _at_eps(rows: pd.DataFrame, eps: float) -> pd.DataFrame:
    return rows[np.isclose(rows["eps"].astype(float), eps, atol=1e-6)]


def load_chen(results_dir: str | Path, profile: str) -> pd.DataFrame:
    """All records of the profile as a DataFrame; RecordsMissing naming the command when none is a Chen
    TA / ATA record (rule attack_chen_pgd), e.g. a reference where only the shared suite of P1+F4 ran."""
    target = f"results/{profile}/notebooks/04_adv_ss_pretraining.ipynb"
    df = load_records(results_dir, profile, target=target)
    if not (df["evaluation"] == PGD_EVALUATION).any():
        raise RecordsMissing(f"no Chen et al. TA / ATA records (rule attack_chen_pgd) under {results_dir}/records: "
                             f"run `snakemake --cores 8 chen --configfile config/{profile}.yaml`")
    return df


def ta_ata(df: pd.DataFrame) -> pd.DataFrame:
    """One row per chen model or ensemble: grid cell, TA and ATA (%), counts, failed checks.

    ``ATA`` is the record's PGD at its headline ε (the paper's protocol); ``robust accuracy`` the
    per-example worst case over every L∞ attack run on the model at ε' <= ε (`robust_mim.evaluation.worst_case`),
    with ``protocol flag`` "paper protocol overstates by X points" where ATA is above it beyond noise;
    ``strongest shared attack`` is the lowest white-box accuracy of the shared suite (attack_eval).
    """
    pgd = df[df["evaluation"] == PGD_EVALUATION]
    out = []
    for model_id, rows in pgd.groupby("model_id", sort=True):
        first, eps = rows.iloc[0], float(rows.iloc[0]["headline_eps"])
        out.append({"model_id": model_id, "kind": first["chen_kind"], "task": first["chen_task"],
                    "pretraining": first["chen_pretraining"], "finetuning": first["chen_finetuning"],
                    "TA": 100 * float(_at_eps(rows, 0.0)["accuracy"].iloc[0]),
                    "ATA": 100 * float(_at_eps(rows, eps)["accuracy"].iloc[0]),
                    "attack": f"PGD-{int(first['attack_steps'])} (step {first['attack_step_255']:g}/255) "
                              f"at {eps * 255:g}/255",
                    "n": int(first["n_examples"]), "members": first["members"], "backbone": first["backbone"],
                    **_worst(df, model_id, eps), **_strongest_shared(df, model_id, eps),
                    "failed checks": _text(first["failed_checks"])})
    out = pd.DataFrame(out)
    if len(out):
        out["protocol flag"] = [overstatement(a, w, n) for a, w, n in zip(out["ATA"], out["robust accuracy"], out["n"])]
    return out


def _worst(df: pd.DataFrame, model_id: str, eps: float) -> dict[str, Any]:
    """The headline robust accuracy (%) of one model: per-example worst case over its L∞ attacks at ``eps``."""
    table = worst_case_table(linf_attack_rows(df[df["model_id"] == model_id]), eps)
    if model_id not in table.index:
        return {"robust accuracy": np.nan, "robust attack": ""}
    return {"robust accuracy": float(table.loc[model_id, "accuracy"]), "robust attack": table.loc[model_id, "attack"]}


def _strongest_shared(df: pd.DataFrame, model_id: str, eps: float) -> dict[str, Any]:
    """Lowest white-box accuracy (%) of the shared suite at ``eps`` and that suite's failed checks."""
    mine = df[(df["model_id"] == model_id) & (df["evaluation"] != PGD_EVALUATION)]
    if "threat_model" not in mine or mine.empty:
        return {"strongest shared attack": np.nan, "shared attack": "not run", "shared failed checks": ""}
    white = _at_eps(mine[(mine["threat_model"] == "white-box") & mine["eps"].notna()], eps)
    if white.empty:
        return {"strongest shared attack": np.nan, "shared attack": "not run", "shared failed checks": ""}
    best = white.loc[white["accuracy"].astype(float).idxmin()]
    return {"strongest shared attack": 100 * float(best["accuracy"]), "shared attack": best["evaluation"],
            "shared failed checks": _text(best["failed_checks"])}


def grid_table(df: pd.DataFrame) -> pd.DataFrame:
    """TA / ATA (%): rows (task, pretraining), columns (F1–F4, TA | ATA); NaN = not run.

    Softmax ensembles are rows ``ensemble: <their members' tasks>``.
    """
    have = ta_ata(df)
    if have.empty:
        return pd.DataFrame()
    have["task"] = np.where(have["kind"] == "ensemble", "ensemble: " + have["task"], have["task"])
    long = have.melt(id_vars=["task", "pretraining", "finetuning"], value_vars=["TA", "ATA"], var_name="metric")
    table = long.pivot_table(index=["task", "pretraining"], columns=["finetuning", "metric"], values="value",
                             aggfunc="first")
    order = [*FINETUNINGS, *sorted(set(have["finetuning"]) - set(FINETUNINGS))]
    cols = [(f, m) for f in order for m in ("TA", "ATA") if (f, m) in table.columns]
    return table[cols].round(1)


def cell_status(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's whole grid, each cell marked run (with its model id) or not run in this profile.

    P1 (no pretraining) has only full fine-tuning: partial fine-tuning of random weights is not
    one of the paper's settings.
    """
    have = ta_ata(df)
    run = {(r.task, r.pretraining, r.finetuning, r.kind): r.model_id for r in have.itertuples()}
    rows = [{"task": "none", "pretraining": "P1", "finetuning": f} for f in ("F3", "F4")]
    rows += [{"task": t, "pretraining": p, "finetuning": f} for t in PAPER_TASKS for p in ("P2", "P3")
             for f in FINETUNINGS]
    for row in rows:
        model = run.get((row["task"], row["pretraining"], row["finetuning"], "single"))
        row["status"] = f"run ({model})" if model else "not run in this profile"
    rows += [{"task": "ensemble" if r.kind == "ensemble" else r.task, "pretraining": r.pretraining,
              "finetuning": r.finetuning, "status": f"run ({r.model_id}: {r.members})" if r.kind == "ensemble"
              else f"run ({r.model_id})"} for r in have.itertuples()
             if r.kind != "single" or r.task not in ("none", *PAPER_TASKS)]
    if not (have["kind"] == "ensemble").any() if not have.empty else True:
        rows.append({"task": "ensemble", "pretraining": "P3", "finetuning": "F4", "status": "not run in this profile"})
    return pd.DataFrame(rows)


def paper_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's numbers beside ours for the settings it reports (ours: NaN = not run here)."""
    have, out = ta_ata(df), []
    for paper in PAPER_NUMBERS:
        sel = have[(have["kind"] == paper["kind"]) & (have["pretraining"] == paper["pretraining"])
                   & (have["finetuning"] == paper["finetuning"])] if not have.empty else have
        if paper["task"] is not None and not sel.empty:
            sel = sel[sel["task"] == paper["task"]]
        ours = sel.sort_values("ATA", ascending=False).head(1)
        out.append({k: paper[k] for k in ("setting", "paper TA", "paper ATA", "paper source")}
                   | {"our model": ours["model_id"].iloc[0] if len(ours) else "not run",
                      "our TA": float(ours["TA"].iloc[0]) if len(ours) else np.nan,
                      "our ATA": float(ours["ATA"].iloc[0]) if len(ours) else np.nan})
    return pd.DataFrame(out)


def pretext_table(df: pd.DataFrame) -> pd.DataFrame:
    """Held-out pretext accuracy (%) of every pretext run, clean and under PGD on the pretext loss."""
    pre = df[df["evaluation"] == "pretext"]
    if pre.empty:
        return pd.DataFrame(columns=["run", "pretraining", "task", "pretext acc", "pretext acc under PGD"])
    return pd.DataFrame({"run": pre["model_id"], "pretraining": pre["chen_pretraining"], "task": pre["task"],
                         "pretext acc": 100 * pre["accuracy"].astype(float),
                         "pretext acc under PGD": 100 * pre["adv_accuracy"].astype(float),
                         "eps (1/255)": (255 * pre["eps"].astype(float)).round(2), "PGD steps": pre["attack_steps"],
                         "n": pre["n_examples"]}).reset_index(drop=True).round(1)


# ----------------------------------------------------------------------------- claims
ROBUST = "robust accuracy"  # the per-example worst case; ATA (PGD-20) is the paper's protocol, shown beside it


def _cell(have: pd.DataFrame, task: str, pretraining: str, finetuning: str) -> pd.Series | None:
    sel = have[(have["kind"] == "single") & (have["task"] == task) & (have["pretraining"] == pretraining)
               & (have["finetuning"] == finetuning)]
    return sel.iloc[0] if len(sel) else None


def _claim(text: str, a: pd.Series | None, b: pd.Series | None, metric: str, at_least: bool = False,
           names: tuple[str, str] = ("", "")) -> dict:
    """One claim ``a`` above ``b`` in ``metric`` (`robust_mim.evaluation.verdict`); robustness claims add ATA beside."""
    if a is None or b is None:
        missing = " and ".join(n for n, s in zip(names, (a, b)) if s is None)
        return {"claim": text, "verdict": NOT_RUN, "ours": f"no {missing} model in this profile"}
    c = compare(float(a[metric]), float(b[metric]), int(a["n"]), int(b["n"]))
    ours = f"{metric} {c.text()} ({a['model_id']} vs {b['model_id']})"
    if metric == ROBUST:
        flags = "; ".join(f for f in (a["protocol flag"], b["protocol flag"]) if f)
        ours += f" [paper protocol, ATA (PGD-20): {a['ATA']:.1f} vs {b['ATA']:.1f}{'; ' + flags if flags else ''}]"
    return {"claim": text, "verdict": verdict([c], at_least), "ours": ours}


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims, each judged from the records with one verdict of `robust_mim.evaluation.verdict`.

    Robustness claims compare the per-example worst case (``robust accuracy``), with the paper's ATA
    (PGD-20) beside it; the first row is the paper's headline setting (Selfie), so it is compared with
    the paper's Selfie number (``not run at this scale`` when no Selfie-like model ran). Our Selfie is
    the simplified ``selfie-like`` task (`robust_mim.papers.chen.deviations`), so that row compares the
    paper's Selfie with our Selfie-like task, as its label says.
    """
    have = ta_ata(df)
    if have.empty:
        return pd.DataFrame([{"claim": "any", "verdict": NOT_RUN, "ours": "no chen records"}])
    p1f4 = _cell(have, "none", "P1", "F4")
    tasks = [SELFIE] + [t for t in PAPER_TASKS if t != SELFIE and (have["task"] == t).any()]
    out = []
    for t in tasks:
        p3f4, p2f4 = _cell(have, t, "P3", "F4"), _cell(have, t, "P2", "F4")
        vs_at, vs_p2 = (f"{t} P3+F4", "P1+F4"), (f"{t} P3+F4", f"{t} P2+F4")
        out += [_claim(f"{t}: P3+F4 beats end-to-end AT (P1+F4) in robust accuracy", p3f4, p1f4, ROBUST,
                       names=vs_at),
                _claim(f"{t}: P3+F4 keeps end-to-end AT's TA (not lower)", p3f4, p1f4, "TA", True, vs_at),
                _claim(f"{t}: adversarial beats standard pretraining under F4 (robust accuracy P3 > P2)", p3f4,
                       p2f4, ROBUST, names=vs_p2),
                _claim(f"{t}: with the pretrained part frozen and adversarial fine-tuning, P3 beats P2 in robust "
                       "accuracy (F2)", _cell(have, t, "P3", "F2"), _cell(have, t, "P2", "F2"), ROBUST,
                       names=(f"{t} P3+F2", f"{t} P2+F2"))]
    out += [_ensemble_claim(have, r) for r in have[have["kind"] == "ensemble"].itertuples()] or [
        {"claim": "the softmax ensemble of fine-tuned models beats its best member in robust accuracy",
         "verdict": NOT_RUN, "ours": "no ensemble in this profile"}]
    return pd.DataFrame(out)


def _ensemble_claim(have: pd.DataFrame, ens: Any) -> dict:
    members = have[have["model_id"].isin(ens.members.split(","))]
    best = members.sort_values(ROBUST, ascending=False).iloc[0] if len(members) else None
    return _claim(f"the softmax ensemble {ens.model_id} beats its best member in robust accuracy",
                  have[have["model_id"] == ens.model_id].iloc[0], best, ROBUST, names=(ens.model_id, "member"))


# ----------------------------------------------------------------------------- figure
def plot_ata(df: pd.DataFrame, title: str = "") -> plt.Figure:
    """ATA (%) by pretraining (P1/P2/P3) and pretext task, one panel per fine-tuning setting run."""
    from robust_mim.reporting.plots import style

    style()
    have = ta_ata(df)
    have = have[have["kind"] == "single"] if not have.empty else have
    panels = [f for f in FINETUNINGS if not have.empty and (have["finetuning"] == f).any()] or ["F4"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), sharey=True, squeeze=False)
    tasks = sorted(set(have["task"])) if not have.empty else []
    for ax, f in zip(axes[0], panels):
        sub = have[have["finetuning"] == f] if not have.empty else have
        for j, task in enumerate(tasks):
            rows = sub[sub["task"] == task]
            xs = [PRETRAININGS.index(p) + (j - (len(tasks) - 1) / 2) * 0.8 / max(1, len(tasks))
                  for p in rows["pretraining"] if p in PRETRAININGS]
            bars = ax.bar(xs, rows[rows["pretraining"].isin(PRETRAININGS)]["ATA"], width=0.8 / max(1, len(tasks)),
                          label=task if task != "none" else "none (P1)")
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(PRETRAININGS)), PRETRAININGS)
        ax.set_xlim(-0.6, len(PRETRAININGS) - 0.4)
        ax.set_title(FINETUNING_NAMES[f], fontsize=10)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("ATA (%)")
    if tasks:
        axes[0][-1].legend(title="pretext task", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the headline claim (claims.md)

CLAIM = "adversarial self-supervised pretraining + adversarial fine-tuning beats end-to-end adversarial training"
PAPER_NUMBER = "TA / ATA 84.72 / 47.22 % → Selfie 86.02 / 51.05 % (ours: a Selfie-like task)"


def judge(results_dir: Path, profile: str, eps_255: float) -> pd.DataFrame:
    """The claims as [claim, ours, status] (the paper's protocol fixes its own ε: chen.eval.eps_255)."""
    return claim_rows(claims(load_records(results_dir, profile)), "claim", "ours", "verdict")
