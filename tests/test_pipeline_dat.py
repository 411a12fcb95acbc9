"""End to end (paper 5, DAT): VQ and corruption records and notebook 05 of the test-profile pipeline."""
import json

import pytest
import yaml

from conftest import REPO

from robust_mim.corruptions import CORRUPTION_NAMES

pytestmark = pytest.mark.pipeline

CONFIG = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
DAT_MODELS = sorted(m for m, run in CONFIG["finetune"]["runs"].items() if "dat" in run.get("papers", []))
VQ_RUNS = sorted(CONFIG["dat"]["vq"]["runs"])


def test_every_dat_model_has_a_corruption_record_covering_every_cell(pipeline):
    assert DAT_MODELS and any(CONFIG["finetune"]["runs"][m]["method"]["name"] == "dat" for m in DAT_MODELS)
    severities = CONFIG["dat"]["corruption"]["severities"]
    for model in DAT_MODELS:
        rec = json.loads((pipeline / "results" / "test" / "records" / model / "corruption" / "corruption.json").read_text())
        assert rec["model_id"] == model and rec["evaluation"] == "corruption" and "dat" in rec["paper"]
        assert {(r["corruption"], r["severity"]) for r in rec["rows"]} == {(c, s) for c in CORRUPTION_NAMES for s in severities}
        assert all(0 <= r["error"] <= 1 and r["n_examples"] == rec["n_examples"] for r in rec["rows"])
        assert rec["n_examples"] == CONFIG["dat"]["corruption"]["n_examples"]
        assert rec["provenance"]["evaluation_subset"]["n"] == rec["n_examples"] and "mCE" not in rec


def test_every_vq_run_has_weights_a_record_and_a_reconstruction_figure(pipeline):
    for run in VQ_RUNS:
        rec = json.loads((pipeline / "results" / "test" / "records" / run / "vq" / "vq.json").read_text())
        row = rec["rows"][0]
        assert rec["evaluation"] == "vq-reconstruction" and 0 < row["usage"] <= 1 and row["psnr"] > 0
        vq_dir = pipeline / "results" / "test" / "dat" / "vq" / run
        assert (vq_dir / "model.safetensors").stat().st_size > 1000
        assert (vq_dir / "reconstructions.png").stat().st_size > 500


def test_notebook_05_was_executed_with_its_table_claims_and_figures(pipeline):
    executed = pipeline / "results" / "test" / "notebooks" / "05_dat.ipynb"
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps(outputs)
    assert "corruption error vs standard" in text and "mCE vs standard" not in text
    assert "<details>" in text and "31.4" in text
    assert any(verdict in text for verdict in ("held", "not run at this scale", "inconclusive (within noise)"))
    figures = pipeline / "figures" / "test" / "05_dat"
    assert (figures / "corruption_error_by_corruption_and_severity.png").stat().st_size > 5000
    assert all((figures / f"vq_reconstructions_{run}.png").is_file() for run in VQ_RUNS)
