"""Each paper's headline claims judged from records, and the claims table (claims.md / claims.html).

One `PaperClaim` per registered paper (`robust_mim.papers.PAPERS`) names its claim, the paper's
number and scale, its notebook and the function that judges it from a profile's records (each
paper's ``tables.judge``, whose verdicts all come from `robust_mim.evaluation.verdict`). `claims_markdown` renders every profile side by side and links
each paper's notebook and its deviation table (`robust_mim.reporting.deviations`). Nothing here attacks or
recomputes a number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from robust_mim.papers import PAPERS
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.verdict import NOT_RUN


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
    judge: Callable[[Path, str, float], pd.DataFrame]  # (results_dir, profile, headline ε in 1/255) -> [claim, ours, status]


def paper_claims() -> list[PaperClaim]:
    """Every registered paper's headline claim (robust_mim.papers.PAPERS; words and numbers from its ``tables``)."""
    out = []
    for paper in PAPERS.values():
        t = paper.module("tables")
        out.append(PaperClaim(paper.key, paper.title, paper.notebook, t.CLAIM, t.PAPER_NUMBER, t.PAPER_SCALE, t.judge))
    return out


def profile_headline_eps_255(results_dir: str | Path, profile: str) -> float:
    """The profile's headline ε (1/255) as its records state it: the ε its AutoAttack ran at
    (``evaluation.headline_eps_255``; `robust_mim.reporting.leaderboard.headline_eps_255`)."""
    from robust_mim.reporting.leaderboard import headline_eps_255

    return headline_eps_255(load_records(results_dir, profile))


def judge_profile(results_dir: str | Path, profile: str, papers: list[PaperClaim] | None = None
                  ) -> dict[str, pd.DataFrame]:
    """Every paper's claims at one profile: paper key -> [claim, ours, status] (the headline first);
    a paper without records at this profile gets one 'not run at this scale' row."""
    out = {}
    try:
        eps_255 = profile_headline_eps_255(results_dir, profile)
    except RecordsMissing:
        eps_255 = math.nan  # no records at all: every paper below says 'not run at this scale'
    for paper in papers or paper_claims():
        try:
            out[paper.key] = paper.judge(Path(results_dir), profile, eps_255).reset_index(drop=True)
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


def table_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(judged: Mapping[str, Mapping[str, pd.DataFrame]], scales: Mapping[str, str],
                    profile: str, notebooks: Iterable[str], provenance: str,
                    papers: list[PaperClaim] | None = None, links_from: str = "../../") -> str:
    """The claims table as markdown: one line per paper (headline claim, the paper's number and scale,
    ours and the status per profile with records, links to the notebook), then every claim per paper.

    Args:
        judged: profile -> `judge_profile` output; scales: profile -> its scale note.
        profile: the profile this file belongs to (links to its executed notebooks, as ``html/<nb>.html``).
        notebooks: the notebooks this profile executes; provenance: one line saying what generated the file.
        links_from: the path from the file's folder to the repository root (``results/<profile>/``: ``../../``).
    """
    papers, profiles, run = papers or paper_claims(), list(judged), set(notebooks)
    head = ["paper", "headline claim", "paper's number (its scale)"]
    head += [f"{k} — {p}" for p in profiles for k in ("ours", "status")] + ["notebook"]
    lines = ["# Claims: each paper's headline claim against our records", "",
             f"_Generated from records, never typed by hand: {provenance}._", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in papers:
        link = f"[source]({links_from}notebooks/{p.notebook}.ipynb)"
        link += f" · [executed](html/{p.notebook}.html)" if p.notebook in run else ""
        link += (f" · [deviations]({links_from}figures/{profile}/{p.notebook}/deviations.html)" if p.notebook in run
                 else f" · [deviations]({links_from}robust_mim/papers/{p.key}/deviations.py)")
        cells = [p.title, p.claim, f"{p.paper_number} ({p.paper_scale})"]
        for prof in profiles:
            first = judged[prof][p.key].iloc[0]
            cells += [f"{first['claim']}: {first['ours']}", f"**{first['status']}**"]
        lines.append("| " + " | ".join(table_cell(c) for c in cells + [link]) + " |")
    lines += ["", "Verdicts: *held*, *not held*, *inconclusive (within noise)* or *not run at this scale*, decided by "
              "`robust_mim.evaluation.verdict` with two binomial standard errors of each difference; robust accuracy is the "
              "per-example worst case over every attack run. *deviations* lists, per paper, where this companion "
              "computes something other than the paper's official code and whether that can change the result."]
    lines += ["", "## Scale of each profile", ""] + [f"- **{k}**: {v}" for k, v in scales.items()]
    lines += ["", "## Every claim, per paper and profile", ""]
    for p in papers:
        lines += [f"### {p.title}", ""]
        for prof in profiles:
            lines += [f"**{prof}**", "", "| claim | ours | status |", "|---|---|---|"]
            lines += [f"| {table_cell(r.claim)} | {table_cell(r.ours)} | {table_cell(r.status)} |"
                      for r in judged[prof][p.key].itertuples()]
            lines.append("")
    return "\n".join(lines) + "\n"
