"""MIMIR's registered steps (adversarial MAE pretraining, PGD-AT, TRADES) and the adaptive-attack CLI helpers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from conftest import filled
from robust_mim.errors import ConfigError
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import vit_spec
from robust_mim.objectives import FINETUNE, PRETRAIN, build_step
from robust_mim.papers.mimir.hsic import hsic_normalized_cca, mimir_adversarial_input
from robust_mim.papers.mimir.methods import mimir_adversarial_example
from conftest import profile_schema
from tiny_models import TinyClassifier, cyclic_batch, minimize, train_tiny_classifier

EPS = 8 / 255


def mimir_schema() -> dict:
    """The schema of the ``mimir`` pretraining objective's arguments (config/schema.yaml)."""
    branches = profile_schema()["$defs"]["pretrain_objective"]["allOf"]
    (branch,) = [b["then"] for b in branches if b["if"]["properties"]["name"].get("const") == "mimir"]
    return branch["properties"]


def mimir(**settings) -> dict:
    """The ``mimir`` objective as a validated config hands it over: the schema's defaults, then ``settings``."""
    defaults = {k: v["default"] for k, v in mimir_schema().items() if "default" in v}
    return {"name": "mimir", **defaults, **settings}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(digits16) -> tuple[Tensor, Tensor]:
    x, y = digits16[0].tensors
    return x[:512], y[:512]


@pytest.fixture(scope="module")
def trained_mae(data) -> MaskedAutoencoder:
    """Nano-ViT MAE trained briefly (MAE objective) on digits."""
    torch.manual_seed(0)
    mae = MaskedAutoencoder(vit_spec("vit_nano_patch4_16"), [0.5] * 3, [0.5] * 3)

    def loss_at(step: int) -> Tensor:
        xb = cyclic_batch(data[0], step)
        return mae(xb, xb, mask_ratio=0.75)[0]

    minimize(torch.optim.AdamW(mae.parameters(), lr=5e-3), loss_at, 100)
    return mae


@pytest.fixture(scope="module")
def trained_clf(data) -> TinyClassifier:
    return train_tiny_classifier(*data)


def mae_loss_with_seed(mae: MaskedAutoencoder, x_in: Tensor, x: Tensor, seed: int) -> float:
    """MAE loss of reconstructing x from x_in with the mask drawn from ``seed`` (same mask for any x_in)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return mae(x_in, x, mask_ratio=0.75, loss_on="masked")[0].item()


# ----------------------------------------------------------------------------- pretraining


def test_pretraining_attack_raises_the_mae_loss_and_stays_in_the_ball(trained_mae, data):
    x = data[0]
    torch.manual_seed(3)
    x_adv = mimir_adversarial_example(trained_mae, x, EPS, 10 / 255, 1, 0.75)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad and all(p.grad is None for p in trained_mae.parameters())
    g = torch.Generator().manual_seed(9)
    x_rand = (x + (2 * torch.rand(x.shape, generator=g) - 1) * EPS).clamp(0, 1)
    seeds = range(100, 116)  # fresh held-out masks, identical for the three inputs
    clean = sum(mae_loss_with_seed(trained_mae, x, x, s) for s in seeds) / 16
    adv = sum(mae_loss_with_seed(trained_mae, x_adv, x, s) for s in seeds) / 16
    rand = sum(mae_loss_with_seed(trained_mae, x_rand, x, s) for s in seeds) / 16
    # Measured (3 training seeds): adv - clean = +0.04% .. +0.36% of the loss, 11x .. 560x the change
    # that uniform noise in the same ball causes. Small because the gradient only reaches the 25% of
    # patches visible under the attack's own mask, and every forward draws a fresh mask (as in MIMIR).
    assert adv > clean
    assert adv - clean > 5 * abs(rand - clean)


def test_mimir_step_logs_recon_and_hsic_separately_and_backprops(trained_mae, data):
    x, y = data[0][:64], data[1][:64]
    mae = MaskedAutoencoder(vit_spec("vit_nano_patch4_16"), [0.5] * 3, [0.5] * 3)
    mae.load_state_dict(trained_mae.state_dict())
    step = build_step(PRETRAIN, filled("pretrain_objective", {"name": "mimir"}))  # defaults: lam 1e-5, cca estimator
    loss, metrics = step(mae, x, y)
    assert set(metrics) == {"recon", "hsic", "hsic_bounded", "total"}
    assert metrics["total"] == pytest.approx(metrics["recon"] + 1e-5 * metrics["hsic"], rel=1e-6)
    assert 0.0 <= metrics["hsic_bounded"] <= 1.0
    assert 1.0 < metrics["hsic"] <= len(x) - 1  # the CCA estimator lives in [0, m - 1]
    assert all(p.grad is None for p in mae.parameters())  # the attack took input gradients only
    loss.backward()
    assert mae.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert mae.decoder_pred.weight.grad.abs().sum() > 0


def _step_grads(mae: MaskedAutoencoder, x: Tensor, y: Tensor, lam: float) -> tuple[float, dict[str, float], dict]:
    mae.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    loss, metrics = build_step(PRETRAIN, filled("pretrain_objective", {"name": "mimir", "lam": lam}))(mae, x, y)
    loss.backward()
    return loss.item(), metrics, {n: p.grad.clone() for n, p in mae.named_parameters() if p.grad is not None}


def test_lam0_is_the_mae_loss_on_the_adversarial_input(trained_mae, data):
    x, y = data[0][:64], data[1][:64]
    torch.manual_seed(5)
    lam0 = filled("pretrain_objective", {"name": "mimir", "lam": 0.0})
    loss0, metrics0 = build_step(PRETRAIN, lam0)(trained_mae, x, y)
    torch.manual_seed(5)  # same draws: random start, attack mask, training mask

    def closure(x_in: Tensor) -> Tensor:
        return trained_mae(x_in, x, mask_ratio=0.75, loss_on="masked")[0]

    x_adv = mimir_adversarial_input(closure, x, EPS, 10 / 255, steps=1, random_start=True)
    expected = trained_mae(x_adv, x, mask_ratio=0.75, loss_on="masked")[0]
    assert loss0.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics0["total"] == metrics0["recon"] and metrics0["hsic"] > 0  # HSIC still logged at lam 0
    trained_mae.zero_grad(set_to_none=True)


def test_hsic_term_reaches_the_encoder_only(trained_mae, data):
    x, y = data[0][:64], data[1][:64]
    loss0, m0, g0 = _step_grads(trained_mae, x, y, 0.0)
    loss1, m1, g1 = _step_grads(trained_mae, x, y, 0.01)
    trained_mae.zero_grad(set_to_none=True)
    assert m0["recon"] == pytest.approx(m1["recon"], rel=1e-6)  # same x', same masks
    assert loss1 - loss0 == pytest.approx(0.01 * m1["hsic"], rel=1e-4)
    assert torch.allclose(g0["decoder_pred.weight"], g1["decoder_pred.weight"], atol=1e-7)  # decoder: recon only
    assert not torch.allclose(g0["encoder.patch_embed.proj.weight"], g1["encoder.patch_embed.proj.weight"], atol=1e-6)


def test_mimir_settings_are_validated():
    mimir, pgd_at = filled("pretrain_objective", {"name": "mimir"}), filled("finetune_method", {"name": "pgd_at"})
    with pytest.raises(ConfigError, match="HSIC estimator"):
        build_step(PRETRAIN, {**mimir, "hsic": "kernel"})
    with pytest.raises(ConfigError, match="lam"):
        build_step(PRETRAIN, {**mimir, "lam": -1.0})
    with pytest.raises(ConfigError, match="hsic_group"):
        build_step(PRETRAIN, {**mimir, "hsic_group": 1})
    with pytest.raises(ConfigError, match="mimir"):
        build_step(PRETRAIN, {**mimir, "epsilon": 8})
    with pytest.raises(ConfigError, match="mimir"):  # an argument missing: the schema fills every one
        build_step(PRETRAIN, {"name": "mimir"})
    with pytest.raises(ConfigError, match="steps"):
        build_step(FINETUNE, {**pgd_at, "steps": 0})


def test_cca_estimator_matches_the_logged_penalty(trained_mae, data):
    x, y = data[0][:32], data[1][:32]
    torch.manual_seed(2)
    _, metrics = build_step(PRETRAIN, filled("pretrain_objective", {"name": "mimir"}))(trained_mae, x, y)
    torch.manual_seed(2)
    x_adv = mimir_adversarial_example(trained_mae, x, EPS, 10 / 255, 1, 0.75)
    with torch.no_grad():
        latent = trained_mae(x_adv, x, mask_ratio=0.75)[3]
    assert metrics["hsic"] == pytest.approx(hsic_normalized_cca(latent, x_adv, 5.0, 5.0).item(), rel=1e-5)
    trained_mae.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- fine-tuning


def _mixed_mode(model: TinyClassifier) -> dict[str, bool]:
    model.train()
    model.drop.eval()  # a submodule in another mode than its parent
    return {n: m.training for n, m in model.named_modules()}


@pytest.mark.parametrize("method", [{"name": "pgd_at", "steps": 3}, {"name": "trades", "steps": 3}])
def test_adversarial_steps_backprop_and_restore_mode(trained_clf, data, method):
    x, y = data[0][:64], data[1][:64]
    modes = _mixed_mode(trained_clf)
    loss, metrics = build_step(FINETUNE, filled("finetune_method", method))(trained_clf, x, y)
    assert {n: m.training for n, m in trained_clf.named_modules()} == modes
    assert all(p.grad is None for p in trained_clf.parameters())
    assert set(metrics) == ({"adv_ce", "adv_acc"} if method["name"] == "pgd_at" else {"natural_ce", "robust_kl"})
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained_clf.parameters())
    trained_clf.zero_grad(set_to_none=True)
    trained_clf.eval()


def test_pgd_at_loss_exceeds_clean_loss_and_eps0_is_clean(trained_clf, data):
    x, y = data[0][:128], data[1][:128]
    trained_clf.eval()
    with torch.no_grad():
        clean = F.cross_entropy(trained_clf(x), y).item()
    torch.manual_seed(0)
    pgd10 = filled("finetune_method", {"name": "pgd_at"})  # PGD-10, 8/255, step 2/255
    adv, metrics = build_step(FINETUNE, pgd10)(trained_clf, x, y)
    zero, _ = build_step(FINETUNE, filled("finetune_method", {"name": "pgd_at", "eps_255": 0}))(trained_clf, x, y)
    assert zero.item() == pytest.approx(clean, rel=1e-5)
    assert adv.item() > clean + 0.1 and 0 <= metrics["adv_acc"] <= 1
    trained_clf.zero_grad(set_to_none=True)


def test_trades_beta0_is_clean_cross_entropy_and_kl_is_positive(trained_clf, data):
    x, y = data[0][:128], data[1][:128]
    trained_clf.eval()
    with torch.no_grad():
        clean = F.cross_entropy(trained_clf(x), y).item()
    beta0 = filled("finetune_method", {"name": "trades", "beta": 0.0, "steps": 3})
    loss0, _ = build_step(FINETUNE, beta0)(trained_clf, x, y)
    loss6, metrics = build_step(FINETUNE, filled("finetune_method", {"name": "trades", "steps": 3}))(trained_clf, x, y)
    assert loss0.item() == pytest.approx(clean, rel=1e-5)
    assert metrics["robust_kl"] > 0
    assert loss6.item() == pytest.approx(metrics["natural_ce"] + 6.0 * metrics["robust_kl"], rel=1e-5)
    trained_clf.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- adaptive-attack CLI helpers


CFG = {"eps_255": [8], "pgd_steps": [3, 6], "step_255": 2, "restarts": 1, "feature_steps": 3, "mi_steps": 3,
       "mi_lams": [1e-5], "hsic": "cca", "sigma": 5.0}  # a validated `mimir` section, small budgets


def test_adaptive_evaluations_run_per_batch_and_are_named_by_their_steps(trained_clf, data):
    from robust_mim.papers.mimir.adaptive import adaptive_entries, evaluate_batched

    x, y = data[0][:40], data[1][:40]
    trained_clf.eval()
    entries = adaptive_entries(CFG)
    results = [evaluate_batched(trained_clf, x, y, fn, 16, torch.Generator().manual_seed(0)) for fn, _ in entries]
    assert [r["evaluation"] for r in results] == ["pgd-3", "pgd-6", "pgd-feature", "pgd-mi-lam1e-05"]
    assert [r["params"]["steps"] for r in results] == [3, 6, 3, 3]
    with torch.no_grad():
        clean = (trained_clf(x).argmax(1) == y).sum().item()
    for r in results:
        (row,) = r["rows"]
        assert row["n_examples"] == 40 and row["accuracy"] == pytest.approx(row["n_correct"] / 40)
        assert row["n_correct"] <= clean and row["eps"] == pytest.approx(EPS)
    assert results[1]["rows"][0]["n_correct"] < clean  # PGD finds adversarial examples on a standard model


def test_adaptive_attacks_log_progress_over_their_batches(trained_clf, data):
    from robust_mim.papers.mimir.adaptive import adaptive_entries, evaluate_batched
    from robust_mim.progress import Progress

    x, y = data[0][:40], data[1][:40]
    lines = []
    progress = Progress(3 * len(adaptive_entries(CFG)), lines.append, "attack-adaptive", "batches")
    for fn, _ in adaptive_entries(CFG):
        evaluate_batched(trained_clf.eval(), x, y, fn, 16, torch.Generator().manual_seed(0), progress)
    assert lines and "attack-adaptive" in lines[-1] and "12/12" in "".join(lines)


def test_pretraining_roles():
    from robust_mim.papers.mimir.methods import pretraining_role

    assert pretraining_role(None) == "scratch"
    assert pretraining_role({"name": "mae", "mask_ratio": 0.75}) == "mae"
    assert pretraining_role({"name": "mimir", "lam": 0.0}) == "mimir-lam0"
    assert pretraining_role({"name": "mimir", "lam": 1e-5}) == "mimir"
    assert pretraining_role(mimir()) == "mimir"


# ----------------------------------------------------------------------------- one default, stated in the schema


def test_the_mimir_settings_have_one_default_stated_in_the_schema():
    import inspect

    from robust_mim.papers.mimir.adaptive import pgd_mi_loss
    from robust_mim.papers.mimir.hsic import mimir_loss
    from robust_mim.papers.mimir.methods import mimir_objective

    props = mimir_schema()
    assert props["hsic"]["default"] == "cca" and props["hsic_group"]["default"] == 128
    assert all("default" in v and v.get("description") for k, v in props.items() if k != "name")
    empty = inspect.Parameter.empty
    factory = PRETRAIN.get("mimir")
    assert all(p.default is empty for p in inspect.signature(factory).parameters.values())
    for fn, args in ((mimir_objective, ("hsic", "hsic_group", "sigma", "lam")),
                     (mimir_loss, ("hsic_fn", "group_size", "sigma")), (pgd_mi_loss, ("hsic_fn", "sigma"))):
        assert all(inspect.signature(fn).parameters[a].default is empty for a in args), fn.__name__
    with pytest.raises(ConfigError, match="mimir"):  # nothing to fall back on but the validated config
        build_step(PRETRAIN, {"name": "mimir", "lam": 1e-5})


def test_mimir_step_averages_its_penalty_over_hsic_groups(trained_mae, data):
    x, y = data[0][:32], data[1][:32]
    torch.manual_seed(4)
    _, metrics = build_step(PRETRAIN, mimir(hsic_group=8))(trained_mae, x, y)
    torch.manual_seed(4)
    x_adv = mimir_adversarial_example(trained_mae, x, EPS, 10 / 255, 1, 0.75)
    with torch.no_grad():
        latent = trained_mae(x_adv, x, mask_ratio=0.75)[3]
    groups = [hsic_normalized_cca(latent[i:i + 8], x_adv[i:i + 8], 5.0, 5.0).item() for i in range(0, 32, 8)]
    assert metrics["hsic"] == pytest.approx(sum(groups) / 4, rel=1e-5)
    assert metrics["hsic"] <= 7  # the CCA value of a group of 8 lies in [0, 7]
    trained_mae.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- PGD-AT with label smoothing


def test_pgd_at_with_label_smoothing_attacks_the_label_and_trains_on_smoothed_targets(trained_clf, data):
    """Official MIMIR fine-tuning: torchattacks PGD on the integer labels, timm LabelSmoothingCrossEntropy(0.1)."""
    from robust_mim.attacks.core import pgd
    from robust_mim.engine import mix_batch
    from robust_mim.objectives.adversarial import pgd_at_terms

    x, y = data[0][:64], data[1][:64]
    _, smoothed = mix_batch(x, y, 10, label_smoothing=0.1)  # [N, K]
    was_training = trained_clf.training
    terms = pgd_at_terms(trained_clf, x, smoothed, EPS, 2 / 255, 3, generator=torch.Generator().manual_seed(1))
    trained_clf.eval()
    x_adv = pgd(trained_clf, x, y, EPS, steps=3, step_size=2 / 255, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        log_p = F.log_softmax(trained_clf(x_adv), dim=1)
    timm_smoothing = 0.9 * F.nll_loss(log_p, y) + 0.1 * (-log_p.mean(dim=1)).mean()
    assert terms["loss"].item() == pytest.approx(timm_smoothing.item(), rel=1e-5)
    assert terms["adv_acc"].item() == pytest.approx((log_p.argmax(1) == y).float().mean().item())
    trained_clf.train(was_training)
