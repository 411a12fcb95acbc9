"""End to end, paper 4 (Chen et al.): the test profile's declared grid has its records and notebook 04 ran."""
import json

import pytest
import torch
import yaml

from conftest import REPO
from robust_mim.io import load_weights

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def declared():
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    models = [m for m, run in cfg["finetune"]["runs"].items() if "chen" in run.get("papers", [])]
    return cfg, models, sorted(cfg["chen"]["ensembles"]), sorted(cfg["chen"]["pretrain"]["runs"])


def test_every_declared_model_and_ensemble_has_a_pgd_record(pipeline, declared):
    cfg, models, ensembles, _ = declared
    assert models and ensembles
    for model_id in models + ensembles:
        rec = json.loads((pipeline / "results" / "test" / "records" / model_id / "chen" / "pgd.json").read_text())
        eps = sorted(round(r["eps"] * 255, 3) for r in rec["rows"])
        assert eps == sorted({0.0, float(cfg["chen"]["eval"]["eps_255"]), float(cfg["chen"]["eval"]["large_eps_255"])})
        assert rec["attack_steps"] == cfg["chen"]["eval"]["steps"] and rec["chen_finetuning"]
        assert rec["chen_kind"] == ("ensemble" if model_id in ensembles else "single")
        assert len(rec["members"].split(",")) == len(cfg["chen"]["ensembles"].get(model_id, [model_id]))


def test_pretext_runs_have_weights_and_records(pipeline, declared):
    _, _, _, runs = declared
    for run in runs:
        assert any(k.startswith("encoder.") for k in load_weights(pipeline / "results" / "test" / "pretrain" / run /
                                                                  "model.safetensors"))
        rec = json.loads((pipeline / "results" / "test" / "records" / run / "pretext" / "pretext.json").read_text())
        assert rec["evaluation"] == "pretext" and rec["rows"]


def test_partial_finetuning_kept_the_pretrained_blocks_bit_identical(pipeline, declared):
    cfg, models, _, _ = declared
    partial = [m for m in models if cfg["finetune"]["runs"][m].get("frozen_blocks")]
    assert partial
    for m in partial:
        run = cfg["finetune"]["runs"][m]
        enc = load_weights(pipeline / "results" / "test" / "pretrain" / run["init"] / "model.safetensors")
        ft = load_weights(pipeline / "results" / "test" / "finetune" / m / "model.safetensors")
        frozen = ("patch_embed.", "cls_token", "pos_embed", *[f"blocks.{i}." for i in range(run["frozen_blocks"] - 1)])
        keys = [k[len("encoder."):] for k in enc if k[len("encoder."):].startswith(frozen)]
        assert keys and all(torch.equal(ft["backbone." + k], enc["encoder." + k]) for k in keys)
        free = [k[len("encoder."):] for k in enc if k.startswith(f"encoder.blocks.{run['frozen_blocks'] - 1}.")]
        assert any(not torch.equal(ft["backbone." + k], enc["encoder." + k]) for k in free)


def test_notebook_04_executed_with_its_figure(pipeline):
    nb = json.loads((pipeline / "results" / "test" / "notebooks" / "04_adv_ss_pretraining.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs and not any(o.get("output_type") == "error" for o in outputs)
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "P3+F4 beats end-to-end AT" in text
    assert (pipeline / "figures" / "test" / "04_adv_ss_pretraining" / "ata_by_pretraining.png").stat().st_size > 5000
