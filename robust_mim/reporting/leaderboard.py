"""One leaderboard under one evaluation and RobustBench-style model cards, from records (claims: `robust_mim.reporting.claims`).

Every classifier the pipeline trains (every model with the shared robustness suite of rule
``attack_eval``) is one row: clean accuracy, PGD L∞ over ε, AutoAttack, PGD L2, adaptive attacks
(EOT, BPDA, feature-space PGD, PGD-MI), the headline robust accuracy (per-example worst case over every
L∞ attack), the unnormalised mean corruption error and certified accuracy where measured, training
cost (Snakemake's benchmark files) and failed sanity checks. Functions over the records DataFrame are
pure; ``load_*`` functions only read files the pipeline wrote. Nothing here attacks or recomputes a number.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib.pyplot as plt
import pandas as pd

from robust_mim.reporting.pages import page
from robust_mim.notebook import resolve_dir
from robust_mim.records import iter_records
from robust_mim.reporting.records import RecordsMissing, load_records
from robust_mim.evaluation.worst_case import NOT_ATTACKS, linf_attack_rows, worst_case_table

SUITE_EVALUATIONS = ("sanity", "pgd-linf")  # a model with these ran the shared suite: a trained classifier
ADAPTIVE_MARKERS = ("eot", "bpda", "feature", "pgd-mi")  # evaluation names of adaptive attacks
AUTOATTACK, OFFICIAL_AUTOATTACK = "autoattack-style-linf", "autoattack-linf"  # ART ensemble, pyautoattack
STRONG_PGD = "pgd-linf-strong"  # the suite's strong PGD, run at the headline ε only
ROBUST = "robust accuracy"  # the headline: per-example worst case over every L∞ attack
UPSTREAM_RULE_PREFIXES = ("pretrain", "train")  # rules that train what a classifier starts from (MIM, pretext, VQ)
FLAG = "⚠ failed checks"
CARD_SCHEMA = "robust_mim.model_card/1"


# ----------------------------------------------------------------------------- loading


def load_leaderboard_records(results_dir: str | Path, profile: str) -> pd.DataFrame:
    """Every record row (`robust_mim.reporting.records.load_records`) plus per-record fields the flat table drops:
    ``norm`` (the attack's, from params), ``papers`` (comma-joined) and ``defense_name``."""
    df = load_records(results_dir, profile, target=f"results/{profile}/notebooks/06_leaderboard.ipynb")
    meta = {}
    for rec in iter_records(resolve_dir(results_dir) / "records"):
        papers, defense = rec.get("paper") or [], rec.get("defense")
        meta[rec["_path"]] = {
            "norm": (rec.get("params") or {}).get("norm") or ("l2" if "l2" in rec["evaluation"] else "linf"),
            "papers": ",".join(papers) if isinstance(papers, list) else str(papers),
            "defense_name": defense.get("name", "") if isinstance(defense, dict) else (defense or "")}
    extra = pd.DataFrame.from_dict(meta, orient="index")
    for col in extra:
        df[col] = df[col].fillna(df["_path"].map(extra[col])) if col in df else df["_path"].map(extra[col])
    return df


def read_benchmarks(results_dir: str | Path) -> pd.DataFrame:
    """Snakemake benchmark files ``benchmarks/<rule>/<job>.tsv`` as rows: rule, job, wall_s, cpu_s, max_rss_mb."""
    rows = []
    for path in sorted(Path(results_dir).glob("benchmarks/*/*.tsv")):
        table = pd.read_csv(path, sep="\t")
        for _, r in table.iterrows():  # one line per repeat; usually one
            rows.append({"rule": path.parent.name, "job": path.stem, "wall_s": float(r["s"]),
                         "cpu_s": float(r.get("cpu_time", math.nan)), "max_rss_mb": float(r.get("max_rss", math.nan))})
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "cpu_s", "max_rss_mb"])


def load_model_cards(cards_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Model cards written by ``python -m robust_mim.cli model-cards``, by model id."""
    paths = sorted(Path(cards_dir).glob("*.json"))
    if not paths:
        raise RecordsMissing(f"no model cards under {cards_dir}: run the snakemake rule report_model_cards")
    return {card["model_id"]: card for card in (json.loads(p.read_text()) for p in paths)}


# ----------------------------------------------------------------------------- per-model numbers


def classifier_ids(df: pd.DataFrame) -> list[str]:
    """Every trained classifier: the models that ran the shared robustness suite (rule attack_eval)."""
    return sorted(df.loc[df["evaluation"].isin(SUITE_EVALUATIONS), "model_id"].unique())


def attack_rows(df: pd.DataFrame, eps: float, norm: str = "linf") -> pd.DataFrame:
    """Accuracy rows of real attacks (no sanity, sweep, certification) at ``eps`` (pixel units) and ``norm``."""
    rows = df[df["eps"].notna() & df["accuracy"].notna() & ~df["evaluation"].isin(NOT_ATTACKS)]
    norms = rows["norm"].fillna("linf") if "norm" in rows else \
        rows["evaluation"].map(lambda e: "l2" if "l2" in e else "linf")
    rows = rows[norms == norm]
    return rows[(rows["eps"].astype(float) - eps).abs() < 1e-6]


def accuracy_at(df: pd.DataFrame, evaluation: str, eps: float, norm: str = "linf") -> pd.Series:
    """Accuracy (%) per model of one evaluation at ``eps``."""
    rows = attack_rows(df, eps, norm)
    return rows[rows["evaluation"] == evaluation].groupby("model_id")["accuracy"].min() * 100


def clean_accuracy(df: pd.DataFrame) -> pd.Series:
    """Clean accuracy (%) per model: the ε = 0 row of PGD L∞ (FGSM where PGD is missing)."""
    pgd, fgsm = accuracy_at(df, "pgd-linf", 0.0), accuracy_at(df, "fgsm-linf", 0.0)
    return pgd.combine_first(fgsm)


def worst_case(df: pd.DataFrame, eps: float, only: Iterable[str] | None = None) -> pd.DataFrame:
    """Per model, the lowest accuracy (%) over every L∞ attack run at ``eps`` (or over evaluations whose
    name contains one of ``only``) and the attack that reached it: columns ``accuracy``, ``attack``."""
    rows = attack_rows(df, eps)
    if only is not None:
        rows = rows[rows["evaluation"].map(lambda e: any(m in e for m in only))]
    if rows.empty:
        return pd.DataFrame(columns=["accuracy", "attack"])
    best = rows.loc[rows.groupby("model_id")["accuracy"].idxmin()].set_index("model_id")
    return pd.DataFrame({"accuracy": best["accuracy"] * 100, "attack": best["evaluation"]})


def headline_worst_case(df: pd.DataFrame, eps: float) -> pd.DataFrame:  # per-example, L∞ attacks at ε' <= eps
    return worst_case_table(linf_attack_rows(df), eps)


def autoattack_evaluation(df: pd.DataFrame) -> str:  # the official AutoAttack where it ran, else ART's
    return OFFICIAL_AUTOATTACK if (df["evaluation"] == OFFICIAL_AUTOATTACK).any() else AUTOATTACK


def autoattack_name(df: pd.DataFrame) -> str:
    """The AutoAttack evaluation as run (official, or the ART ensemble named by its components)."""
    infos = df.loc[df["evaluation"] == autoattack_evaluation(df), "attack_info"] if "attack_info" in df else []
    names = sorted({i.get("attack") or " + ".join(i.get("components", [])) for i in infos if isinstance(i, dict)})
    return " / ".join(n for n in names if n) or "AutoAttack-style ensemble"


def certified_at(df: pd.DataFrame, radius: float) -> pd.Series:
    """Certified accuracy (%) per model at L2 ``radius``: best over the σ it was certified at; a radius
    beyond what N allows (``within_max_radius`` false) counts as not measured."""
    if "radius" not in df:
        return pd.Series(dtype=float)
    rows = df[(df["evaluation"] == "certify") & ((df["radius"] - radius).abs() < 1e-6)]
    if "within_max_radius" in rows:
        rows = rows[rows["within_max_radius"].fillna(False).astype(bool)]
    return rows.groupby("model_id")["certified_accuracy"].max() * 100


def mean_corruption_error(df: pd.DataFrame) -> pd.Series:
    """Unnormalised mean corruption error (%) per model as its ``corruption`` record states it (field
    ``mean_corruption_error``, called ``mCE`` by records written before it was renamed: the mean over corruptions
    of the error averaged over severities — not the paper's mCE, which divides by AlexNet's errors)."""
    fields = [f for f in ("mean_corruption_error", "mCE") if f in df]
    if not fields:
        return pd.Series(dtype=float)
    value = df[fields].astype(float).bfill(axis=1).iloc[:, 0]  # the new field, else the old one
    rows = df.assign(_error=value)[(df["evaluation"] == "corruption") & value.notna()]
    return rows.groupby("model_id")["_error"].first() * 100


def failed_checks(df: pd.DataFrame) -> pd.Series:
    """Per model: every sanity check that failed in any of its records (comma-separated, sorted)."""
    names = df[["model_id", "failed_checks"]].dropna()
    names = names.assign(check=names["failed_checks"].str.split(",")).explode("check")
    if "passed" in df and "check" in df:  # sanity records that hold their checks as rows
        rows = df[df["evaluation"].str.startswith("sanity") & (df["passed"] == False)]  # noqa: E712
        names = pd.concat([names[["model_id", "check"]], rows[["model_id", "check"]]])
    names = names.assign(check=names["check"].astype(str).str.strip())
    names = names[names["check"].ne("") & names["check"].ne("nan")]
    return names.groupby("model_id")["check"].agg(lambda s: ", ".join(sorted(set(s))))


def headline_eps_255(df: pd.DataFrame) -> float:
    """The suite's headline ε (1/255; the profile's ``evaluation.headline_eps_255``) as the records state it:
    the ε its AutoAttack ran at, else that of the strong PGD (which runs at the headline ε only).

    Raises:
        RecordsMissing: no record of either (one line: run rule attack_eval, or pass the ε).
    """
    for evaluation in (autoattack_evaluation(df), STRONG_PGD):
        eps = df.loc[df["evaluation"] == evaluation, "eps"].dropna() if "eps" in df else []
        if len(eps):
            return round(float(eps.max()) * 255, 3)
    raise RecordsMissing("no AutoAttack or strong-PGD record states the headline ε: run rule attack_eval "
                         "(or pass headline_eps_255)")


# ----------------------------------------------------------------------------- the leaderboard


def leaderboard(df: pd.DataFrame, costs: pd.DataFrame | None = None, eps_255: Iterable[float] = (4, 8),
                head_eps_255: float | None = None, l2_eps: float = 0.5, radii: Iterable[float] = (0.25, 0.5),
                models: Iterable[str] | None = None) -> pd.DataFrame:
    """Exactly one row per trained classifier, every number in %, from records.

    Columns: papers, defense, clean, PGD L∞ at each ε, AutoAttack (official where run, else the ART
    ensemble) and PGD L2 at ``l2_eps``, ``adaptive (worst)`` (EOT / BPDA / feature / MI attacks, where
    run), ``robust accuracy`` (the headline: per-example worst case over every L∞ attack at the headline
    ε, `headline_worst_case`) and the attack that broke most examples, the unnormalised mean corruption
    error and certified accuracy where measured, n (test images), training cost (from ``costs``:
    `training_cost`) and the failed sanity checks. Rows are sorted by robust accuracy, best first. ``models`` keeps only those ids (e.g. the configured
    ones, leaving out records of models since removed from the config).
    """
    ids = [m for m in classifier_ids(df) if models is None or m in set(models)]
    sub = df[df["model_id"].isin(ids)]
    head = headline_eps_255(sub) if head_eps_255 is None else float(head_eps_255)
    out = pd.DataFrame(index=pd.Index(ids, name="model_id"))
    for col in ("papers", "defense_name"):
        out[col.replace("_name", "")] = sub.groupby("model_id")[col].first() if col in sub else ""
    out["clean (%)"] = clean_accuracy(sub)
    for e in eps_255:
        out[f"PGD L∞ {e:g}/255 (%)"] = accuracy_at(sub, "pgd-linf", e / 255)
    aa = f"{autoattack_name(sub)} {head:g}/255 (%)"
    out[aa] = accuracy_at(sub, autoattack_evaluation(sub), head / 255)
    out[f"PGD L2 {l2_eps:g} (%)"] = accuracy_at(sub, "pgd-l2", l2_eps, norm="l2")
    adaptive = worst_case(sub, head / 255, only=ADAPTIVE_MARKERS)
    out[f"adaptive (worst) {head:g}/255 (%)"] = adaptive["accuracy"]
    worst = headline_worst_case(sub, head / 255)
    out[f"{ROBUST} (worst case) {head:g}/255 (%)"] = worst["accuracy"]
    out["worst attack"] = worst["attack"]
    out["corruption error, unnormalised (%)"] = mean_corruption_error(sub)
    for r in radii:
        out[f"certified r={r:g} (%)"] = certified_at(sub, r)
    out["n"] = sub[sub["evaluation"] == "pgd-linf"].groupby("model_id")["n_examples"].max()  # the shared suite's
    if costs is not None:
        out = out.join(costs[[c for c in ("train wall (s)", "train CPU (s)", "train GPU (s)") if c in costs]])
    out[FLAG] = failed_checks(sub).reindex(out.index).fillna("")
    out.attrs["scale_note"] = "; ".join(sorted(sub["scale_note"].dropna().unique())) if "scale_note" in sub else ""
    out.attrs.update(headline_eps_255=head, autoattack_column=aa, autoattack=autoattack_name(sub))
    return out.sort_values(f"{ROBUST} (worst case) {head:g}/255 (%)", ascending=False, na_position="last",
                           kind="stable")


def robust_column(board: pd.DataFrame) -> str:
    """Name of the headline ``robust accuracy (worst case)`` column of a leaderboard."""
    return next(c for c in board.columns if c.startswith(ROBUST))


def pareto_front(x: pd.Series, y: pd.Series, maximize_x: bool = True) -> pd.Series:
    """True where no other point is at least as good in x and y and better in one (y maximised; x maximised
    or, with ``maximize_x=False``, minimised, e.g. a cost). NaN points are never on the front."""
    pts = pd.DataFrame({"x": x if maximize_x else -x, "y": y}).dropna()
    front = pd.Series(False, index=x.index)
    for name, p in pts.iterrows():
        others = pts.drop(index=name)
        front[name] = not ((others["x"] >= p["x"]) & (others["y"] >= p["y"])
                           & ((others["x"] > p["x"]) | (others["y"] > p["y"]))).any()
    return front


# ----------------------------------------------------------------------------- training cost


def training_cost(bench: pd.DataFrame, upstream: Mapping[str, Iterable[str]],
                  gpu_processes: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Training cost per model: the benchmark rows of its fine-tuning job and of the upstream runs it starts
    from (pretraining, pretext, VQ autoencoder), summed.

    Args:
        bench: `read_benchmarks` rows (rule, job, wall_s, cpu_s, max_rss_mb).
        upstream: model -> ids of the runs it starts from; a row counts when its rule is ``finetune*`` and its
            job is the model, or its rule starts with one of `UPSTREAM_RULE_PREFIXES` and its job is an
            upstream id. A shared pretraining run counts in full for every model built on it.
        gpu_processes: job id -> GPU processes it trained with (0 or absent: CPU); gives GPU seconds.
    Returns:
        per model: ``train wall (s)``, ``train CPU (s)``, ``train GPU (s)``, ``peak RSS (MB)``, ``jobs``.
    """
    gpus = gpu_processes or {}
    out = {}
    for model, ids in upstream.items():
        ids = set(ids)
        hit = bench[[(r.startswith("finetune") and j == model) or (r.startswith(UPSTREAM_RULE_PREFIXES) and j in ids)
                     for r, j in zip(bench["rule"], bench["job"])]]
        gpu = sum(w * gpus.get(j, 0) for w, j in zip(hit["wall_s"], hit["job"]))
        out[model] = {"train wall (s)": round(hit["wall_s"].sum(), 3) if len(hit) else math.nan,
                      "train CPU (s)": round(hit["cpu_s"].sum(), 3) if len(hit) else math.nan,
                      "train GPU (s)": round(gpu, 3) if gpu > 0 else math.nan,
                      "peak RSS (MB)": hit["max_rss_mb"].max() if len(hit) else math.nan,
                      "jobs": ", ".join(f"{r}/{j}" for r, j in zip(hit["rule"], hit["job"]))}
    return pd.DataFrame.from_dict(out, orient="index")


def costs_from_cards(cards: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """The training-cost columns of `leaderboard` from model cards."""
    names = {"wall_s": "train wall (s)", "cpu_s": "train CPU (s)", "gpu_s": "train GPU (s)",
             "max_rss_mb": "peak RSS (MB)"}
    rows = {m: {names[k]: (math.nan if v is None else v) for k, v in c["training"]["cost"].items() if k in names}
            for m, c in cards.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


# ----------------------------------------------------------------------------- display


SORT_SCRIPT = """<script>(function(){const t=document.getElementById("%s");if(!t)return;
t.querySelectorAll("th").forEach((th,i)=>{th.title="click to sort";
th.onclick=()=>{const b=t.tBodies[0],rows=[...b.rows],up=th.dataset.dir==="desc";
t.querySelectorAll("th").forEach(h=>delete h.dataset.dir);th.dataset.dir=up?"asc":"desc";
const v=r=>{const s=r.cells[i].dataset.v??r.cells[i].innerText;if(s==="")return null;
const n=parseFloat(s);return isNaN(n)?s:n;};
rows.sort((a,c)=>{const x=v(a),y=v(c);if(x===null||y===null)return (x===null)-(y===null);
const o=(typeof x==="number"&&typeof y==="number")?x-y:String(x).localeCompare(String(y));return up?o:-o;});
rows.forEach(r=>b.appendChild(r));};});})();</script>"""
TABLE_STYLE = ("<style>#%(id)s{border-collapse:collapse;font:12px system-ui,sans-serif}#%(id)s caption{text-align:left;"
               "color:#555;padding:.4em 0}#%(id)s th{position:sticky;top:0;background:#24466b;color:#fff;padding:.4em .6em;"
               "cursor:pointer}#%(id)s th[data-dir=desc]::after{content:' ▼'}#%(id)s th[data-dir=asc]::after{content:' ▲'}"
               "#%(id)s td{padding:.3em .6em;border-bottom:1px solid #ddd}#%(id)s tbody tr:nth-child(even){background:#f6f8fa}"
               "#%(id)s tbody tr:hover{background:#e8f0fe}#%(id)s td.robust{font-weight:600;background:#eef6ee}"
               "#%(id)s td.warn{background:#f8d7da;color:#842029}#%(id)s td:first-child{white-space:nowrap}</style>")


def sortable_html(board: pd.DataFrame, table_id: str = "leaderboard") -> str:
    """The leaderboard as a styled HTML table that sorts by any column on click (a small inline script and
    style, no external assets; without JavaScript a plain table in the board's order). Missing numbers show
    '—' and sort last; the robust-accuracy column is marked as the current sort (descending)."""
    robust = robust_column(board) if any(str(c).startswith(ROBUST) for c in board.columns) else None
    head = "".join(f'<th{" data-dir=desc" if c == robust else ""}>{html.escape(str(c))}</th>'
                   for c in [board.index.name or "", *board.columns])
    body = []
    for idx, row in board.iterrows():
        cells = [f"<td>{html.escape(str(idx))}</td>"]
        for col, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                text, key = ("—", "") if pd.isna(v) else (f"{v:.0f}" if col == "n" else f"{v:.1f}", f"{v}")  # n: a count
                cls = ' class="robust"' if col == robust else ""
                cells.append(f'<td{cls} data-v="{key}" style="text-align:right">{text}</td>')
            else:
                warn = ' class="warn"' if col == FLAG and v else ""
                cells.append(f"<td{warn}>{html.escape('' if v is None or v is pd.NA else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = html.escape(f"Scale: {board.attrs.get('scale_note', '')} — click a column header to sort")
    return (TABLE_STYLE % {"id": table_id} + f'<table id="{table_id}"><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>" + SORT_SCRIPT % table_id)


def save_leaderboard(board: pd.DataFrame, figures_dir: str | Path, name: str = "leaderboard") -> Path:
    """Write the leaderboard as a standalone sortable HTML page and a CSV beside it; return the HTML path."""
    path = Path(figures_dir) / f"{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    board.to_csv(path.with_suffix(".csv"))
    title = f"Leaderboard: every classifier, sorted by {robust_column(board)}"
    body = f"<style>body{{max-width:none}}</style><h2>{html.escape(title)}</h2>{sortable_html(board)}"
    path.write_text(page(body, title), encoding="utf-8")
    return path


def _scatter(board: pd.DataFrame, x: str, y: str, ax: plt.Axes, cost: bool = False) -> None:
    """One point per model, the Pareto front in red; each point carries a number (models at one point share
    it; numbers pushed apart by `robust_mim.reporting.plots.repel_offsets`), and a key outside the axes names the models of each number."""
    pts = board[[x, y]].dropna()
    front = pareto_front(pts[x], pts[y], maximize_x=not cost)
    ax.scatter(pts.loc[~front, x], pts.loc[~front, y], color="grey", label="dominated")
    line = pts[front].sort_values(x)
    ax.plot(line[x], line[y], "o-", color="crimson", label="Pareto front")
    if cost:
        ax.set_xscale("log")
    else:
        ax.set_xlim(-2, 102)
    ax.set(xlabel=x, ylabel=y, ylim=(-2, 102))
    from robust_mim.reporting.plots import repel_offsets

    groups = sorted(pts.groupby([pts[x], pts[y]]).groups.items(), key=lambda g: (-g[0][1], g[0][0]))
    xy = [ax.transData.transform(p) * 72 / ax.figure.dpi for p, _ in groups]  # display pixels -> points
    for k, ((p, models), off) in enumerate(zip(groups, repel_offsets(xy))):
        ax.annotate(str(k + 1), p, xytext=off, textcoords="offset points", fontsize=7, ha="center", va="center",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    key = [f"{k + 1}: " + ", ".join(f"{m} ⚠" if board.at[m, FLAG] else m for m in models)
           for k, (_, models) in enumerate(groups)]
    ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, fontsize=7, va="top", ha="left", family="monospace")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)  # outside the data


def plot_pareto(board: pd.DataFrame, title: str = "") -> plt.Figure:
    """Clean vs robust (worst) accuracy, one point per classifier, the Pareto front highlighted."""
    from robust_mim.reporting.plots import style

    style()
    fig, ax = plt.subplots(figsize=(9.0, 4.8))
    _scatter(board, "clean (%)", robust_column(board), ax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_cost(board: pd.DataFrame, title: str = "") -> plt.Figure:
    """Robust (worst) accuracy against training cost (GPU seconds where trained on GPUs, else CPU seconds)."""
    from robust_mim.reporting.plots import style

    style()
    cost = "train GPU (s)" if "train GPU (s)" in board and board["train GPU (s)"].notna().any() else "train CPU (s)"
    fig, ax = plt.subplots(figsize=(9.0, 4.8))
    if cost in board:
        _scatter(board, cost, robust_column(board), ax, cost=True)
    ax.set_title(f"{title}\ncost = pretraining + fine-tuning jobs (benchmark files)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- model cards


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars -> Python numbers
    return None if isinstance(value, float) and math.isnan(value) else value


def record_summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One record as a model card lists it: what ran, its numbers, its parameters and provenance."""
    prov = rec["provenance"]
    keep = ("evaluation", "attack", "threat_model", "surrogate", "n_examples", "params", "rows")
    return {**{k: rec.get(k) for k in keep}, "record": rec.get("_path"),
            "provenance": {k: prov.get(k) for k in ("git_commit", "git_dirty", "config_hash", "seed", "device",
                                                     "wall_time_s", "date", "versions", "evaluation_subset")}}


def model_card(model_id: str, board: pd.DataFrame, records: list[Mapping[str, Any]], settings: Mapping[str, Any],
               cost: Mapping[str, Any], checkpoint: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A RobustBench-style model card: numbers as numbers, full provenance, the training settings.

    Args:
        model_id: the stable id shared by checkpoint, records and tables (a row of ``board``).
        board: the `leaderboard`; records: the model's raw records (`iter_records`).
        settings: ``{"run": fine-tuning settings, "upstream": {id: settings of each run it starts from}}``;
        cost: its `training_cost` row.
        checkpoint: ``{"path", "sha256"}``; spec: profile-wide settings (profile, scale_note, data, model, seed).
    """
    row = {k: _jsonable(v) for k, v in board.loc[model_id].items()}
    aa, head = board.attrs["autoattack_column"], board.attrs["headline_eps_255"]
    run, prov = settings.get("run", {}), [r["provenance"] for r in records]
    return _jsonable({
        "schema": CARD_SCHEMA, "model_id": model_id, "profile": spec["profile"], "scale_note": spec["scale_note"],
        "papers": run.get("papers", []), "dataset": spec["data"]["name"], "image_size": spec["data"]["image_size"],
        "architecture": run.get("backbone") or spec["model"]["arch"], "threat_model": "Linf", "eps": head / 255,
        "eps_255": head, "units": "accuracy in percent of n test images", "n_examples": row.get("n"),
        "clean_acc": row.get("clean (%)"), "autoattack_acc": row.get(aa), "autoattack": board.attrs["autoattack"],
        "robust_acc_worst": row.get(robust_column(board)), "worst_attack": row.get("worst attack"),
        "failed_sanity_checks": [c for c in (row.get(FLAG) or "").split(", ") if c],
        "leaderboard_row": row, "checkpoint": dict(checkpoint),
        "training": {"finetune": run, "upstream": settings.get("upstream", {}), "seed": spec.get("seed"),
                     "cost": {"wall_s": cost.get("train wall (s)"), "cpu_s": cost.get("train CPU (s)"),
                              "gpu_s": cost.get("train GPU (s)"), "max_rss_mb": cost.get("peak RSS (MB)"),
                              "jobs": cost.get("jobs", "")}},
        "evaluations": [record_summary(r) for r in records],
        "provenance": {"git_commits": sorted({p.get("git_commit", "unknown") for p in prov}),
                       "config_hashes": sorted({p.get("config_hash", "") for p in prov}),
                       "devices": sorted({str(p.get("device")) for p in prov}),
                       "dates": [min((p.get("date", "") for p in prov), default=""),
                                 max((p.get("date", "") for p in prov), default="")]},
    })
