"""End to end, paper 1 (NIM / De³): notebook 01, its figures and the De³ records of the test pipeline."""
import json

import pytest
import yaml

from conftest import REPO, profile_schema
from robust_mim.config import validate_config

pytestmark = pytest.mark.pipeline
CONFIG = validate_config(yaml.safe_load((REPO / "config" / "test.yaml").read_text()),
                         profile_schema())  # defaults filled
DE3_MODELS = sorted(m for m, run in CONFIG["finetune"]["runs"].items()
                    if (run.get("defense") or {}).get("name") == "de3" and "nim" in run.get("papers", []))


def _records(pipeline, model, folder):
    return {p.stem: json.loads(p.read_text()) for p in (pipeline / "results" / "test" / "records" / model / folder).glob("*.json")}


def test_the_test_profile_has_a_de3_model():
    assert DE3_MODELS, "config/test.yaml should keep at least one De³ model of paper nim"


def test_notebook_01_is_executed_and_saves_its_figures(pipeline):
    nb = json.loads((pipeline / "results" / "test" / "notebooks" / "01_nim_de3.ipynb").read_text())
    text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "Verdict:" in text and "our scale:" in text
    figures = pipeline / "figures" / "test" / "01_nim_de3"
    for name in ("sigma_tradeoff.png", "robustness_by_pretraining.png"):
        assert (figures / name).stat().st_size > 5000, name


@pytest.mark.parametrize("model", DE3_MODELS)
def test_de3_records_carry_eot_and_gray_box_evaluations(pipeline, model):
    recs = _records(pipeline, model, "robustness")
    eot, gray = recs["pgd-linf-eot"], recs["pgd-linf-gray-box"]
    assert eot["defense"]["name"] == "de3" and eot["params"]["eot_samples"] == CONFIG["evaluation"]["eot_samples"] > 1
    assert gray["threat_model"] == "gray-box" and gray["surrogate"] == "bare"
    assert recs["pgd-linf"]["params"]["eot_samples"] == 1  # the paper's single-draw protocol, beside EOT
    for rec in (eot, gray):
        assert {4, 8} <= {round(r["eps"] * 255) for r in rec["rows"]}
    checks = {c["check"]: c for c in recs["sanity"]["rows"]}
    assert checks["eot_not_weaker_than_single_draw"]["passed"] is not None


@pytest.mark.parametrize("model", DE3_MODELS)
def test_sigma_sweep_record_covers_the_configured_sigmas(pipeline, model):
    rec = _records(pipeline, model, "sigma_sweep")["sigma_sweep"]
    assert rec["evaluation"] == "sigma-sweep" and rec["n_examples"] == CONFIG["nim"]["sweep_n_examples"]
    rows = rec["rows"]
    assert sorted({r["sigma_255"] for r in rows}) == sorted(float(s) for s in CONFIG["nim"]["sigma_sweep_255"])
    for s in CONFIG["nim"]["sigma_sweep_255"]:
        at = [r for r in rows if r["sigma_255"] == s]
        assert sorted(round(r["eps"] * 255, 6) for r in at) == [0, CONFIG["nim"]["sweep_eps_255"]]
        assert all(0 <= r["accuracy"] <= 1 and r["eot_samples"] == (1 if s == 0 else CONFIG["evaluation"]["eot_samples"])
                   for r in at)
