"""DMAE fine-tuning losses (Jeong & Shin 2020 consistency; Cohen 2019 Gaussian augmentation)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_mim.errors import ConfigError
from robust_mim.objectives.consistency import consistency_loss, gaussian_augmentation_loss

SHAPE = (3, 8, 8)


def tiny_cnn(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


class InputIndependent(nn.Module):
    """Returns the same (learnable) logits for every input, so noise cannot change them."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(num_classes))
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        return self.logits.expand(len(x), -1)


class Recorder(nn.Module):
    """Wraps a model and keeps the inputs it was called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def test_consistency_loss_is_finite_backprops_and_reports_components():
    model = tiny_cnn()
    x, y = batch()
    loss, parts = consistency_loss(model, x, y, sigma=0.25, num_noise=2, lbd=2.0, eta=0.5)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(parts) == {"loss", "ce", "kl", "entropy"}
    assert parts["kl"] > 0 and parts["entropy"] > 0 and parts["ce"] > 0
    assert parts["loss"] == pytest.approx(parts["ce"] + 2.0 * parts["kl"] + 0.5 * parts["entropy"],
                                          rel=1e-5)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_kl_term_vanishes_when_the_model_ignores_noise():
    model = InputIndependent()
    x, y = batch()
    loss, parts = consistency_loss(model, x, y, sigma=1.0, num_noise=4, lbd=10.0, eta=0.0)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-6)
    assert parts["loss"] == pytest.approx(F.cross_entropy(model.logits.expand(6, -1), y).item(),
                                          rel=1e-5)


def test_num_noise_copies_run_as_one_batch_of_independent_noisy_images():
    n, m, sigma = 6, 3, 0.5
    model = Recorder(tiny_cnn())
    x, y = batch(n)
    gen = torch.Generator().manual_seed(0)
    consistency_loss(model, x, y, sigma=sigma, num_noise=m, generator=gen)
    assert len(model.inputs) == 1
    seen = model.inputs[0].view(m, n, *SHAPE)  # copy-major
    noise = seen - x.unsqueeze(0)  # [m, N, 3, H, W]
    assert noise.std().item() == pytest.approx(sigma, rel=0.1)
    assert not torch.allclose(noise[0], noise[1]) and not torch.allclose(noise[1], noise[2])


def test_kl_matches_the_mean_over_copies_of_kl_average_to_each_copy():
    model = Recorder(tiny_cnn().double())  # float64: the KL term is small
    x, y = batch()
    _, parts = consistency_loss(model, x.double(), y, sigma=1.0, num_noise=3)
    assert parts["kl"] > 0
    with torch.no_grad():
        probs = F.softmax(model.model(model.inputs[0]), dim=1).view(3, 6, -1)  # [m, N, K]
    avg = probs.mean(0)
    kl = (avg * (avg.log() - probs.log())).sum(-1).mean()  # KL(p̄ ‖ p_i), averaged
    entropy = -(avg * avg.log()).sum(-1).mean()
    assert parts["kl"] == pytest.approx(kl.item(), rel=1e-8)
    assert parts["entropy"] == pytest.approx(entropy.item(), rel=1e-8)


def test_single_copy_has_no_consistency_term_and_bad_num_noise_raises():
    model = tiny_cnn()
    x, y = batch()
    _, parts = consistency_loss(model, x, y, sigma=0.25, num_noise=1)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ConfigError):
        consistency_loss(model, x, y, sigma=0.25, num_noise=0)


def test_gaussian_augmentation_loss_is_cross_entropy_of_the_noisy_input():
    model = Recorder(tiny_cnn())
    x, y = batch()
    loss = gaussian_augmentation_loss(model, x, y, sigma=0.25,
                                      generator=torch.Generator().manual_seed(0))
    noisy = model.inputs[0]
    assert not torch.allclose(noisy, x)
    assert loss.item() == pytest.approx(F.cross_entropy(model.model(noisy), y).item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(model.model(x), y).item(), rel=1e-6)
    loss.backward()


def test_consistency_loss_takes_soft_targets_as_mixup_gives_them():
    x, y = batch()
    torch.manual_seed(1)
    loss, parts = consistency_loss(tiny_cnn(), x, F.one_hot(y, 5).float(), 0.25, num_noise=2)  # [N, K] targets
    torch.manual_seed(1)
    _, hard = consistency_loss(tiny_cnn(), x, y, 0.25, num_noise=2)
    assert torch.isfinite(loss) and parts == pytest.approx(hard)  # one-hot targets = the labels, copy by copy
    torch.manual_seed(1)
    _, smooth = consistency_loss(tiny_cnn(), x, F.one_hot(y, 5).float() * 0.9 + 0.02, 0.25, num_noise=2)
    assert smooth["kl"] == pytest.approx(hard["kl"]) and smooth["ce"] != pytest.approx(hard["ce"])
