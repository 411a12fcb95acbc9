"""Each paper's headline claims judged from records, and the claims table (claims.md / claims.html).

One `PaperClaim` per paper names its claim, the paper's number and scale, its notebook and the
function that judges it from a profile's records (each paper's ``tables_*.claims``, whose verdicts
all come from `robust_mim.verdict`). `claims_markdown` renders every profile side by side and links
each paper's notebook and its deviation table (`robust_mim.deviations`). Nothing here attacks or
recomputes a number.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from robust_mim.report import RecordsMissing, load_records
from robust_mim.verdict import NOT_RUN, VERDICTS


# ----------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class PaperClaim:
    """A paper's headline claim: its words and numbers at its scale, and the function that judges it."""

    key: str
    title: str
    notebook: str
    claim: str
    paper_number: str
    paper_scale: str
    judge: Callable[[Path, str], pd.DataFrame]  # (results_dir, profile) -> claims [claim, ours, status]


def _frame(claims: pd.DataFrame, claim: str, ours: str, status: str) -> pd.DataFrame:
    """A paper module's claims as [claim, ours, status]; every status is one of `robust_mim.verdict.VERDICTS`."""
    unknown = set(claims[status]) - set(VERDICTS)
    if unknown:
        raise ValueError(f"claims outside the verdict vocabulary {VERDICTS}: {sorted(unknown)}")
    return pd.DataFrame({"claim": claims[claim].astype(str), "ours": claims[ours].astype(str),
                         "status": claims[status].astype(str)})


def judge_nim(results_dir: Path, profile: str, eps_255: float = 8.0) -> pd.DataFrame:
    from robust_mim import tables_nim as t

    df, models = t.load_nim(results_dir, profile)
    c = t.claims(t.robustness_table(df, models, [eps_255]), t.sweep_table(df), eps_255)
    return _frame(c, "paper (its scale)", "ours (this scale)", "verdict")


def judge_mimir(results_dir: Path, profile: str, eps_255: float = 8.0) -> pd.DataFrame:
    from robust_mim import tables_mimir as t

    df = t.load_mimir_records(results_dir, profile)  # with df: the near-chance rule, as in notebook 02
    return _frame(t.claims(t.headline_table(df, eps_255), df), "claim", "ours", "verdict")


def judge_dmae(results_dir: Path, profile: str) -> pd.DataFrame:
    from robust_mim import tables_dmae as t

    cert = t.load_certifications(results_dir, profile)
    records = t.certification_records(results_dir, set(zip(cert["model_id"], cert["sigma"])))
    return _frame(t.claims(cert, records), "claim", "evidence", "status")


def judge_chen(results_dir: Path, profile: str) -> pd.DataFrame:
    from robust_mim import tables_chen as t

    return _frame(t.claims(load_records(results_dir, profile)), "claim", "ours", "verdict")


def judge_dat(results_dir: Path, profile: str) -> pd.DataFrame:
    from robust_mim import tables_dat as t

    df, models = t.load_dat(results_dir, profile)
    c = t.claims(t.summary_table(df, models), models)
    c = pd.concat([c[c["claim"] == "mce"], c[c["claim"] != "mce"]])  # the headline: corruption robustness
    return _frame(c, "paper (its scale)", "ours (this scale)", "verdict")


def paper_claims() -> list[PaperClaim]:
    """The five papers' headline claims; scales and numbers from the paper modules where they state them."""
    from robust_mim import tables_chen, tables_dat, tables_dmae, tables_mimir, tables_nim

    dmae, mimir = tables_dmae.PAPER_CIFAR10, tables_mimir.PAPER_CIFAR10[0]
    return [
        PaperClaim("nim", "NIM / De³ (You et al., NeurIPS 2023)", "01_nim_de3",
                   "De³ (denoise the input with the NIM-pretrained autoencoder, then classify) raises robust "
                   "accuracy far above plain fine-tuning of the same encoder",
                   "qualitative (robustness 'on par with adversarial training'); no single number quoted here",
                   tables_nim.PAPER_SCALE, judge_nim),
        PaperClaim("mimir", "MIMIR (Xu et al.)", "02_mimir",
                   "MIMIR pretraining + PGD-AT fine-tuning beats adversarial training from scratch",
                   f"{mimir['model']}: {mimir['clean (%)']} % clean / {mimir['AutoAttack (%)']} % AutoAttack at 8/255",
                   tables_mimir.PAPER_SCALE, judge_mimir),
        PaperClaim("dmae", "DMAE (Wu et al., ICLR 2023)", "03_dmae_certified",
                   "a DMAE-pretrained, consistency-fine-tuned base classifier certifies more than Cohen et al.'s",
                   "certified " + " / ".join(f"{dmae['DMAE + consistency'][r]:g}" for r in tables_dmae.CLAIM_RADII)
                   + " % vs " + " / ".join(f"{dmae['Cohen RS'][r]:g}" for r in tables_dmae.CLAIM_RADII)
                   + " % at r = " + " / ".join(f"{r:g}" for r in tables_dmae.CLAIM_RADII),
                   dmae["DMAE + consistency"]["scale"], judge_dmae),
        PaperClaim("chen", "Chen et al. (CVPR 2020)", "04_adv_ss_pretraining",
                   "adversarial self-supervised pretraining + adversarial fine-tuning beats end-to-end "
                   "adversarial training", "TA / ATA 84.72 / 47.22 % → Selfie 86.02 / 51.05 %",
                   tables_chen.PAPER_SCALE, judge_chen),
        PaperClaim("dat", "DAT (Mao et al., NeurIPS 2022)", "05_dat",
                   "discrete adversarial training improves corruption robustness",
                   "MAE-ViT-H + DAT: ImageNet-C mCE {:.2f} (Stylized-ImageNet {:.2f} %)".format(
                       *tables_dat.PAPER_RESULTS.loc["MAE-ViT-H", ["ImageNet-C mCE ↓", "Stylized-ImageNet (%)"]]),
                   tables_dat.PAPER_SCALE, judge_dat),
    ]


def judge_profile(results_dir: str | Path, profile: str, papers: list[PaperClaim] | None = None
                  ) -> dict[str, pd.DataFrame]:
    """Every paper's claims at one profile: paper key -> [claim, ours, status] (the headline first);
    a paper without records at this profile gets one 'not run at this scale' row."""
    out = {}
    for paper in papers or paper_claims():
        try:
            out[paper.key] = paper.judge(Path(results_dir), profile).reset_index(drop=True)
        except RecordsMissing as exc:
            out[paper.key] = pd.DataFrame([{"claim": paper.claim, "ours": str(exc).split(":")[0],
                                            "status": NOT_RUN}])
    return out


def headline_claims(judged: Mapping[str, pd.DataFrame], papers: list[PaperClaim] | None = None) -> pd.DataFrame:
    """One row per paper at one profile: its headline claim, the paper's number, ours and the status."""
    rows = []
    for p in papers or paper_claims():
        first = judged[p.key].iloc[0]
        rows.append({"paper": p.title, "headline claim": p.claim, "paper's number": p.paper_number,
                     "ours (as tested)": f"{first['claim']}: {first['ours']}", "status": first["status"],
                     "notebook": f"notebooks/{p.notebook}.ipynb"})
    return pd.DataFrame(rows).set_index("paper")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(judged: Mapping[str, Mapping[str, pd.DataFrame]], scales: Mapping[str, str],
                    profile: str, notebooks: Iterable[str], provenance: str,
                    papers: list[PaperClaim] | None = None) -> str:
    """The claims table as markdown: one line per paper (headline claim, the paper's number and scale,
    ours and the status per profile with records, links to the notebook), then every claim per paper.

    Args:
        judged: profile -> `judge_profile` output; scales: profile -> its scale note.
        profile: the profile this file belongs to (links to its executed notebooks, as ``html/<nb>.html``).
        notebooks: the notebooks this profile executes; provenance: one line saying what generated the file.
    """
    papers, profiles, run = papers or paper_claims(), list(judged), set(notebooks)
    head = ["paper", "headline claim", "paper's number (its scale)"]
    head += [f"{k} — {p}" for p in profiles for k in ("ours", "status")] + ["notebook"]
    lines = ["# Claims: each paper's headline claim against our records", "",
             f"_Generated from records, never typed by hand: {provenance}._", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in papers:
        link = f"[source](../../notebooks/{p.notebook}.ipynb)"
        link += f" · [executed](html/{p.notebook}.html)" if p.notebook in run else ""
        link += (f" · [deviations](../../figures/{profile}/{p.notebook}/deviations.html)" if p.notebook in run
                 else " · [deviations](../../robust_mim/deviations.py)")
        cells = [p.title, p.claim, f"{p.paper_number} ({p.paper_scale})"]
        for prof in profiles:
            first = judged[prof][p.key].iloc[0]
            cells += [f"{first['claim']}: {first['ours']}", f"**{first['status']}**"]
        lines.append("| " + " | ".join(_cell(c) for c in cells + [link]) + " |")
    lines += ["", "Verdicts: *held*, *not held*, *inconclusive (within noise)* or *not run at this scale*, decided by "
              "`robust_mim.verdict` with two binomial standard errors of each difference; robust accuracy is the "
              "per-example worst case over every attack run. *deviations* lists, per paper, where this companion "
              "computes something other than the paper's official code and whether that can change the result."]
    lines += ["", "## Scale of each profile", ""] + [f"- **{k}**: {v}" for k, v in scales.items()]
    lines += ["", "## Every claim, per paper and profile", ""]
    for p in papers:
        lines += [f"### {p.title}", ""]
        for prof in profiles:
            lines += [f"**{prof}**", "", "| claim | ours | status |", "|---|---|---|"]
            lines += [f"| {_cell(r.claim)} | {_cell(r.ours)} | {_cell(r.status)} |"
                      for r in judged[prof][p.key].itertuples()]
            lines.append("")
    return "\n".join(lines) + "\n"
