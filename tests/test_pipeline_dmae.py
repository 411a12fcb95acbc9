"""End to end (paper 3, DMAE): certification records and notebook 03 of the test-profile pipeline."""
import json

import pytest
import yaml
from scipy.stats import norm

from conftest import REPO

pytestmark = pytest.mark.pipeline

CONFIG = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
DMAE_MODELS = sorted(m for m, run in CONFIG["finetune"]["runs"].items() if "dmae" in run.get("papers", []))


def certification_records(pipeline):
    return {p: json.loads(p.read_text()) for p in (pipeline / "results" / "test" / "records").glob("*/certify/*.json")}


def test_every_dmae_model_is_certified_at_its_training_sigma(pipeline):
    assert DMAE_MODELS, "config/test.yaml should list dmae models"
    found = {(r["model_id"], r["sigma"]) for r in certification_records(pipeline).values()}
    expected = {(m, CONFIG["finetune"]["runs"][m]["method"]["sigma"]) for m in DMAE_MODELS}
    assert expected <= found


def test_certification_records_respect_the_max_radius_and_are_monotone(pipeline):
    cfg = CONFIG["dmae"]
    for path, rec in certification_records(pipeline).items():
        assert (rec["n0"], rec["n"], rec["alpha"]) == (cfg["n0"], cfg["n"], cfg["alpha"]), path
        assert rec["n_images"] == rec["n_examples"] == len(rec["images"]) == cfg["n_examples"]
        max_radius = rec["sigma"] * norm.ppf(rec["alpha"] ** (1 / rec["n"]))
        assert rec["max_radius"] == pytest.approx(max_radius, rel=1e-9)
        assert all(0 <= img["radius"] <= max_radius + 1e-9 for img in rec["images"]), path
        rows = sorted(rec["rows"], key=lambda r: r["radius"])
        acc = [r["certified_accuracy"] for r in rows]
        assert all(0 <= a <= 1 for a in acc) and all(a >= b for a, b in zip(acc, acc[1:])), path
        assert all(r["certified_accuracy"] == 0 for r in rows if not r["within_max_radius"]), path
        assert {float(k) for k in rec["certified_accuracy"]} == {float(r) for r in cfg["radii"]}


def test_notebook_03_was_executed_and_saved_its_figure(pipeline):
    executed = pipeline / "results" / "test" / "notebooks" / "03_dmae_certified.ipynb"
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps(outputs)
    assert "max_radius" in text and any(v in text for v in ("held", "not run at this scale", "inconclusive (within noise)"))
    figure = pipeline / "figures" / "test" / "03_dmae_certified" / "certified_accuracy_vs_radius.png"
    assert figure.stat().st_size > 5000
