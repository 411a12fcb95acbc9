"""benchmarks/bench_gpu.py on the CPU: its analytic FLOP counts agree with torch's FlopCounterMode
on a tiny ViT, and without a GPU it skips cleanly (exit 0, JSON saying "no GPU").

Whether FlopCounterMode counts a fused ``scaled_dot_product_attention`` kernel depends on the torch
release (2.14 does not count it on the CPU), so the tests count attention explicitly: every timm
attention layer runs its unfused path (``q @ k.T``, softmax, ``attn @ v``), whose matmuls every
release counts. The analytic formulas are the same either way."""
import importlib.util
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import REPO
from robust_mim.models import MaskedAutoencoder, vit_spec
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.vit import build_vit_encoder

_spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
bench = sys.modules.setdefault("bench_gpu", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bench)

ARCH, BATCH, K = "vit_nano_patch4_16", 3, 10


def _unfused(model: nn.Module) -> nn.Module:
    """Switch every timm attention layer to its explicit-matmul path (same outputs, countable FLOPs)."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _classifier() -> ImageClassifier:
    torch.manual_seed(0)
    spec = vit_spec(ARCH)
    return _unfused(ImageClassifier(build_vit_encoder(spec), spec.embed_dim, K, [0.5] * 3, [0.5] * 3))


def _batch():
    return torch.rand(BATCH, 3, 16, 16), torch.randint(0, K, (BATCH,))


def test_classifier_forward_flops_match_flop_counter_exactly():
    model, (x, _) = _classifier(), _batch()
    assert _counted(lambda: model(x)) == BATCH * bench.classifier_forward_flops(vit_spec(ARCH), K)


@pytest.mark.parametrize("mask_ratio", [0.75, 0.0])
def test_mae_forward_flops_match_flop_counter_exactly(mask_ratio):
    torch.manual_seed(0)
    mae, (x, _) = _unfused(MaskedAutoencoder(vit_spec(ARCH), [0.5] * 3, [0.5] * 3)), _batch()
    counted = _counted(lambda: mae(x, x, mask_ratio=mask_ratio))
    assert counted == BATCH * bench.mae_forward_flops(vit_spec(ARCH), mask_ratio)


def test_training_step_is_about_three_forward_passes():
    model, (x, y) = _classifier(), _batch()
    counted = _counted(lambda: F.cross_entropy(model(x), y).backward())
    analytic = BATCH * bench.train_step_flops(bench.classifier_forward_flops(vit_spec(ARCH), K))
    assert counted == pytest.approx(analytic, rel=0.05)  # differences: attention recompute, no input grad


def test_a_pgd_iteration_is_about_two_forward_passes():
    model, (x, y) = _classifier(), _batch()
    model.requires_grad_(False)  # as inside PGD: gradients w.r.t. the input only
    x.requires_grad_(True)
    counted = _counted(lambda: F.cross_entropy(model(x), y).backward())
    forward = BATCH * bench.classifier_forward_flops(vit_spec(ARCH), K)
    assert counted == pytest.approx(2 * forward, rel=0.1)
    assert bench.pgd_at_step_flops(100, steps=10) == 10 * 200 + 300


def test_workloads_cover_mae_and_pgd_at_for_vit_s_32_and_vit_b_224():
    names = {(w.name, w.arch) for w in bench.WORKLOADS}
    assert names == {(n, a) for n in ("mae_pretrain", "pgd_at_finetune")
                     for a in ("vit_small_patch4_32", "vit_base_patch16_224")}
    vit_b = next(w for w in bench.WORKLOADS if w.arch == "vit_base_patch16_224" and w.name == "pgd_at_finetune")
    assert 34e9 < bench.classifier_forward_flops(vit_b.spec, 1000) < 36e9  # ViT-B/16: 17.6 GMACs = 35.1 GFLOPs


def test_without_a_gpu_the_benchmark_skips_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--out", str(tmp_path / "gpu.json")]) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["status"] == "skipped" and result["reason"] == "no GPU"
    assert "no CUDA GPU" in capsys.readouterr().out
