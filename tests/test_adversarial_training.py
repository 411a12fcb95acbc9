"""PGD-AT and TRADES training losses: finite scalars, backprop, restored modes, at least the clean loss."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import filled
from robust_mim.errors import ConfigError
from robust_mim.objectives.adversarial import (pgd_at_loss, pgd_at_terms, trades_loss, trades_perturb,
                                               trades_terms)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(8 * 16, 10))


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(32, 3, 16, 16, generator=gen), torch.randint(0, 10, (32,), generator=gen)


LOSSES = [
    lambda m, x, y: pgd_at_loss(m, x, y, eps=8 / 255, step_size=2 / 255, steps=5),
    lambda m, x, y: trades_loss(m, x, y, beta=6.0, eps=8 / 255, step_size=2 / 255, steps=5),
]


@pytest.mark.parametrize("loss_fn", LOSSES, ids=["pgd_at", "trades"])
def test_finite_scalar_backprop_and_no_grad_pollution(batch, loss_fn):
    model, (x, y) = make_model().train(), batch
    loss = loss_fn(model, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(p.grad is None for p in model.parameters())  # the inner attack left parameter grads alone
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("loss_fn", LOSSES, ids=["pgd_at", "trades"])
@pytest.mark.parametrize("training", [True, False])
def test_modes_restored(batch, loss_fn, training):
    model, (x, y) = make_model().train(training), batch
    model[3].train(not training)  # a mixed-mode model: every flag must come back as it was
    before = [m.training for m in model.modules()]
    loss_fn(model, x, y)
    assert [m.training for m in model.modules()] == before


def test_inner_attack_runs_in_eval_mode(batch):
    model, (x, y) = make_model().train(), batch
    seen = []
    model[1].register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    pgd_at_loss(model, x, y, steps=3)
    assert seen[:-1] and not any(seen[:-1])  # attack steps in eval mode
    assert seen[-1] is True  # the outer loss in the caller's (train) mode


def test_pgd_at_attacks_in_train_mode_as_chen_et_al_when_asked(batch):
    """attack_mode train (Chen et al.'s finetune/main.py): BatchNorm normalises every attack step with batch
    statistics and updates its running statistics; the default (eval) leaves them to the outer forward."""
    from robust_mim.objectives import FINETUNE, build_step

    x, y = batch
    for mode, attack_updates in (("train", 3), ("eval", 0)):
        model, seen = make_model().train(), []
        model[1].register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
        build_step(FINETUNE, filled("finetune_method", {"name": "pgd_at", "steps": 3, "attack_mode": mode}))(model, x, y)
        assert seen == [mode == "train"] * 3 + [True]  # three attack steps, then the outer loss in train mode
        assert int(model[1].num_batches_tracked) == attack_updates + 1
        assert model.training and model[3].training  # modes restored
    with pytest.raises(ConfigError, match="attack_mode"):
        build_step(FINETUNE, {**filled("finetune_method", {"name": "pgd_at"}), "attack_mode": "inference"})


@pytest.mark.parametrize("loss_fn", LOSSES, ids=["pgd_at", "trades"])
def test_loss_at_least_clean_cross_entropy(batch, loss_fn):
    model, (x, y) = make_model().eval(), batch
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
    assert loss_fn(model, x, y) >= clean - 1e-6


def test_trades_terms_components(batch):
    model, (x, y) = make_model().eval(), batch
    terms = trades_terms(model, x, y, beta=6.0, steps=5, generator=torch.Generator().manual_seed(0))
    assert terms["robust_kl"] > 0
    assert terms["loss"].item() == pytest.approx(terms["natural_ce"].item() + 6.0 * terms["robust_kl"].item(), rel=1e-5)
    no_robust = trades_terms(model, x, y, beta=0.0, steps=2)
    with torch.no_grad():
        assert no_robust["loss"].item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


def test_trades_perturbation_in_ball_and_raises_kl(batch):
    model, (x, _) = make_model().eval(), batch
    eps = 8 / 255
    x_adv = trades_perturb(model, x, eps=eps, step_size=2 / 255, steps=5, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        kl_adv = F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="batchmean")
        kl_rand = F.kl_div(F.log_softmax(model((x + eps * torch.randn_like(x).sign()).clamp(0, 1)), 1), p,
                           reduction="batchmean")
    assert kl_adv > kl_rand


def test_pgd_at_terms_report_adversarial_accuracy(batch):
    model, (x, y) = make_model().eval(), batch
    terms = pgd_at_terms(model, x, y, steps=5)
    assert 0.0 <= terms["adv_acc"].item() <= 1.0
    assert terms["adv_ce"].item() == pytest.approx(terms["loss"].item())
