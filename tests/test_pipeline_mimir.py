"""End to end (paper 2, MIMIR): pretraining metrics, adaptive-attack records and notebook 02 (test profile)."""
import json

import pytest
import yaml

from robust_mim.config import validate_config
from conftest import REPO, profile_schema

pytestmark = pytest.mark.pipeline

CONFIG = validate_config(yaml.safe_load((REPO / "config" / "test.yaml").read_text()), profile_schema())  # defaults filled
RUNS = CONFIG["finetune"]["runs"]
MIMIR_MODELS = sorted(m for m, run in RUNS.items() if "mimir" in run.get("papers", []))


def adaptive_records(pipeline, model):
    folder = pipeline / "results" / "test" / "records" / model / "mimir-adaptive"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_every_mimir_model_has_adaptive_records_with_attack_params(pipeline):
    assert MIMIR_MODELS, "config/test.yaml should list mimir models"
    cfg = CONFIG["mimir"]
    expected = {f"pgd-{k}" for k in cfg["pgd_steps"]} | {"pgd-feature", "sanity"}
    expected |= {f"pgd-mi-lam{lam:g}" for lam in cfg["mi_lams"]}
    for model in MIMIR_MODELS:
        records = adaptive_records(pipeline, model)
        assert set(records) == expected, model
        n = CONFIG["evaluation"]["n_examples"]
        for name, rec in records.items():
            assert rec["model_id"] == model and rec["n_examples"] == n and rec["method_params"] == RUNS[model]["method"]
            if name == "sanity":
                assert {c["check"] for c in rec["rows"]} >= {"more_steps_restarts_not_weaker"}
                continue
            assert rec["threat_model"] == "white-box" and rec["params"]["norm"] == "linf"
            assert rec["params"]["step_size"] == pytest.approx(cfg["step_255"] / 255)
            (row,) = rec["rows"]
            assert row["eps"] == pytest.approx(cfg["eps_255"][0] / 255) and row["n_examples"] == n
            assert row["accuracy"] == pytest.approx(row["n_correct"] / n)
        assert [records[f"pgd-{k}"]["params"]["steps"] for k in cfg["pgd_steps"]] == cfg["pgd_steps"]
        assert records["pgd-feature"]["params"]["loss"].startswith("feature-distance")
        assert records["pgd-feature"]["params"]["steps"] == cfg["feature_steps"]


def test_cross_entropy_attacks_do_not_beat_clean_accuracy(pipeline):
    for model in MIMIR_MODELS:
        clean = json.loads((pipeline / "results" / "test" / "records" / model / "robustness" / "pgd-linf.json")
                           .read_text())
        (clean_row,) = [r for r in clean["rows"] if r["eps"] == 0]
        for name, rec in adaptive_records(pipeline, model).items():
            if name not in ("sanity", "pgd-feature"):  # feature PGD ignores labels: it may fix a mistake
                assert rec["rows"][0]["n_correct"] <= clean_row["n_correct"] + 1, (model, name)


def test_pretraining_metrics_log_recon_and_hsic_per_epoch(pipeline):
    mimir_runs = [r for r, run in CONFIG["pretrain"]["runs"].items() if run["objective"]["name"] == "mimir"]
    assert mimir_runs
    for run in mimir_runs:
        lines = (pipeline / "results" / "test" / "pretrain" / run / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert [r["epoch"] for r in rows] == list(range(1, CONFIG["pretrain"]["epochs"] + 1))
        for r in rows:
            assert 0 <= r["hsic_bounded"] <= 1 and r["hsic"] > 0 and r["recon"] > 0
            lam = CONFIG["pretrain"]["runs"][run]["objective"]["lam"]
            assert r["total"] == pytest.approx(r["recon"] + lam * r["hsic"], rel=1e-4)


def test_notebook_02_was_executed_with_claims_and_figures(pipeline):
    executed = pipeline / "results" / "test" / "notebooks" / "02_mimir.ipynb"
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps(outputs)
    assert "Xu et al. (MIMIR)" in text and "52.96" in text  # the paper's numbers beside ours
    assert any(v in text for v in ("held", "inconclusive (within noise)", "not run at this scale"))
    assert "APGD-CE" in text and "PGD-MI" in text and "feature PGD" in text
    for name in ("pretraining_curves", "robust_accuracy_by_pretraining"):
        assert (pipeline / "figures" / "test" / "02_mimir" / f"{name}.png").stat().st_size > 5000
