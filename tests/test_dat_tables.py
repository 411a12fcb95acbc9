"""Notebook 05's table layer (robust_mim.papers.dat.tables): roles, the three labelled corruption errors and the
claims, from synthetic records."""
from __future__ import annotations

import pytest

from robust_mim.papers.dat import tables as td
from robust_mim.corruptions import CORRUPTION_NAMES
from robust_mim.records import make_record, provenance, write_record
from robust_mim.reporting.records import RecordsMissing

N = 400


def write_corruption(root, model: str, init: str | None, method: str, clean: float, error: float,
                     mce_alexnet: float | None = None) -> None:
    """A corruption record as corruption-eval writes it: every corruption at severities 1 and 5; severity 5
    and later corruptions get higher error (a fixed pattern scaled by ``error``)."""
    rows = [{"corruption": c, "severity": s, "error": min(1.0, error * (1 + i / 30) * (0.8 if s == 1 else 1.2)),
             "n_examples": N} for i, c in enumerate(CORRUPTION_NAMES) for s in (1, 5)]
    for r in rows:
        r.update(accuracy=1 - r["error"], n_correct=round((1 - r["error"]) * N))
    rec = make_record(model, "corruption", "unit", rows, n_examples=N, params={}, paper=["dat"],
                      provenance=provenance({}, 0, "cpu", 0.0), init=init, method=method, vq=None, epochs=3,
                      clean_error=1 - clean, mean_corruption_error=error, mCE_alexnet=mce_alexnet,
                      corruption_benchmark="generated 16x16 corruptions (CIFAR-10-C style)", scale_note="unit",
                      sanity_checks=[])
    write_record(root / "records" / model / "corruption" / "corruption.json", rec)


@pytest.fixture
def results(tmp_path):
    write_corruption(tmp_path, "std", None, "standard", clean=0.80, error=0.40)
    write_corruption(tmp_path, "dat", None, "dat", clean=0.90, error=0.20)  # better on both, far beyond noise
    write_corruption(tmp_path, "ft", "mae", "standard", clean=0.85, error=0.30)
    write_corruption(tmp_path, "mdat", "mae", "dat", clean=0.85, error=0.30)  # identical to its reference
    return tmp_path


def test_roles_and_order_put_each_reference_before_its_dat_model(results):
    _, models = td.load_dat(results, "unit")
    assert list(models["model_id"]) == ["std", "dat", "ft", "mdat"]
    assert list(models["role"]) == ["standard", "DAT", "MAE + fine-tune", "MAE + DAT"]
    assert td.role(None, "pgd_at") == "PGD-AT" and td.role("nim", "pgd_at") == "NIM + PGD-AT"


def test_relative_error_is_100_for_the_baseline_and_scales_with_the_errors(results):
    df, models = td.load_dat(results, "unit")
    summary = td.summary_table(df, models)
    assert summary.attrs["baseline"] == "std" and "generated" in summary.attrs["benchmark"]
    assert summary.loc["std", td.RELATIVE] == pytest.approx(100)
    assert summary.loc["dat", td.RELATIVE] == pytest.approx(50, abs=0.01)  # every error halved
    assert summary.loc["dat", "clean acc (%)"] == pytest.approx(90)
    cells = td.corruption_cells(df)
    mean = cells[cells["model_id"] == "ft"]["error"].mean() * 100
    assert summary.loc["ft", td.UNNORMALISED] == pytest.approx(mean, abs=0.01)
    per = td.per_corruption_table(df, models)
    assert list(per.index) == list(CORRUPTION_NAMES) + ["mean"] and per.loc["mean", "DAT"] < per.loc["mean", "standard"]
    assert "<details>" in td.per_cell_html(df, models)


def test_claims_need_every_dat_model_to_beat_its_reference_beyond_noise(results):
    df, models = td.load_dat(results, "unit")
    verdicts = td.claims(td.summary_table(df, models), models).set_index("claim")["verdict"]
    # not every DAT model is better, none is worse: inconclusive, which the claims table shows as within noise
    assert verdicts["clean"] == "inconclusive (within noise)"
    ours = td.claims(td.summary_table(df, models), models).set_index("claim")["ours (this scale)"]
    assert "1 better, 1 within noise" in ours["clean"]
    kept = models[models["model_id"].isin(["std", "dat"])]
    verdicts = td.claims(td.summary_table(df, kept), kept).set_index("claim")["verdict"]
    assert (verdicts == "held").all()
    none = models[models["method"] != "dat"]
    assert (td.claims(td.summary_table(df, none), none)["verdict"] == "not run at this scale").all()


def test_a_dat_model_worse_beyond_noise_is_reported_as_worse(tmp_path):
    write_corruption(tmp_path, "std", None, "standard", clean=0.90, error=0.20)
    write_corruption(tmp_path, "dat", None, "dat", clean=0.70, error=0.40)
    df, models = td.load_dat(tmp_path, "unit")
    verdicts = td.claims(td.summary_table(df, models), models).set_index("claim")["verdict"]
    assert verdicts["clean"] == verdicts["mce"] == "not held"


def test_missing_records_name_the_snakemake_target(tmp_path):
    with pytest.raises(RecordsMissing, match="05_dat.ipynb"):
        td.load_dat(tmp_path, "unit")


def test_only_the_alexnet_normalised_number_is_called_the_papers_mce(results):
    """Generated corruptions: an unnormalised error and an error relative to our standard model, each labelled,
    and no column called mCE; ImageNet-C records (mCE_alexnet) add the paper's mCE next to them."""
    df, models = td.load_dat(results, "unit")
    summary = td.summary_table(df, models)
    assert [c for c in summary.columns if "mCE" in c] == []
    assert "unnormalised" in td.UNNORMALISED and "standard" in td.RELATIVE and "AlexNet" in td.MCE_ALEXNET
    claims = td.claims(summary, models).set_index("claim")["ours (this scale)"]
    assert claims["mce"].startswith(td.UNNORMALISED)
    imagenet_c = results / "imagenet-c"
    write_corruption(imagenet_c, "std", None, "standard", clean=0.80, error=0.40, mce_alexnet=0.62)
    write_corruption(imagenet_c, "dat", None, "dat", clean=0.90, error=0.20, mce_alexnet=0.31)
    df, models = td.load_dat(imagenet_c, "unit")
    summary = td.summary_table(df, models)
    assert summary[td.MCE_ALEXNET].to_dict() == pytest.approx({"std": 62.0, "dat": 31.0})
    assert summary.loc["dat", td.RELATIVE] == pytest.approx(50, abs=0.01)
