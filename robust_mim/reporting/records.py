"""Tables for the notebooks, built only from records (never recomputed, never typed by hand)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from robust_mim.errors import RobustMimError
from robust_mim.notebook import resolve_dir
from robust_mim.records import read_records


class RecordsMissing(RobustMimError):
    """The notebook's records have not been produced yet; the message names the target."""


class ProfileMismatch(RecordsMissing):
    """The records found belong to another profile than the one named (e.g. a misspelled parameter)."""


def load_records(results_dir: str | Path, profile: str, target: str = "all") -> pd.DataFrame:
    """Every record under ``results_dir/records`` as a DataFrame (a relative ``results_dir`` is taken
    from the repository root, wherever the kernel started).

    Raises:
        RecordsMissing: no records there; the message names the Snakemake command that makes them.
        ProfileMismatch: the records are of another profile than ``profile`` (one line saying which).
        BadRecord: a file there is malformed or not a record (one line naming it).
    """
    root = resolve_dir(results_dir) / "records"
    df = read_records(root) if root.is_dir() else pd.DataFrame()
    if df.empty:
        raise RecordsMissing(
            f"no records for profile '{profile}' under {root}: run "
            f"`snakemake --cores 8 {target} --configfile config/{profile}.yaml` first"
        )
    found = sorted(str(p) for p in df["profile"].dropna().unique()) if "profile" in df else []
    if found != [profile]:
        other = found[0] if len(found) == 1 else "..."
        raise ProfileMismatch(f"records in {root.parent} are of profile {', '.join(map(repr, found)) or 'none'}, "
                              f"not '{profile}': pass -p results_dir results/{profile} (or -p profile {other})")
    return df


def pivot_accuracy(df: pd.DataFrame, evaluations: list[str], eps_255: list[float] | None = None,
                   index: str = "model_id") -> pd.DataFrame:
    """Accuracy (%) per model (rows) × evaluation@ε (columns), plus the failed sanity checks."""
    sub = df[df["evaluation"].isin(evaluations)].copy()
    if eps_255 is not None and "eps" in sub:
        keep = sub["eps"].isna() | (sub["eps"] * 255).round(3).isin([round(e, 3) for e in eps_255])
        sub = sub[keep]
    sub["column"] = sub.apply(_column_name, axis=1)
    sub["order"] = sub["evaluation"].map(evaluations.index) * 1e6 + sub["eps"].fillna(0)
    table = sub.pivot_table(index=index, columns="column", values="accuracy", aggfunc="first") * 100
    order = sub.groupby("column")["order"].first().sort_values().index
    table = table[list(order)].round(1)
    table["failed sanity checks"] = df.groupby(index)["failed_checks"].first().reindex(table.index).fillna("")
    return table


def _column_name(row: pd.Series) -> str:
    eps = row.get("eps")
    if eps is None or pd.isna(eps):
        return row["evaluation"]
    return f"{row['evaluation']} @{eps * 255:g}/255" if row.get("norm", "linf") == "linf" else \
        f"{row['evaluation']} @{eps:g}"


def sanity_report(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model × sanity check with pass/fail and its numbers (failures first)."""
    sanity = df[df["evaluation"] == "sanity"]
    if sanity.empty:
        return pd.DataFrame(columns=["model_id", "check", "passed", "details"])
    cols = [c for c in ("model_id", "check", "passed", "details") if c in sanity]
    out = sanity[cols].copy()
    out["status"] = out["passed"].map({True: "pass", False: "FAIL"}).fillna("n/a")
    return out.sort_values(["status", "model_id"], key=lambda s: s.map({"FAIL": 0}).fillna(1) if s.name == "status" else s)
