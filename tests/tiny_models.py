"""Tiny models that train in seconds on 16x16 digits, shared by the test files (fixtures in conftest.py)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def digits_cnn() -> nn.Sequential:
    """Two conv + max-pool stages and a linear head: images [N, 3, 16, 16] -> logits [N, 10]."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def train_digits_cnn(x: Tensor, y: Tensor, epochs: int = 4, seed: int = 0) -> nn.Sequential:
    """`digits_cnn` trained for a few seconds with Adam on x [N, 3, 16, 16], y [N] (clean accuracy ~95%)."""
    torch.manual_seed(seed)
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


class NoisyInput(nn.Module):
    """A randomized defense: Gaussian noise of std ``sigma`` on the input, fresh on every call."""

    def __init__(self, model: nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.sigma * torch.randn_like(x))


class TinyClassifier(nn.Module):
    """Project-style classifier: embed(x) -> [N, D], head: Linear, forward = head(embed); has dropout (mode matters)."""

    def __init__(self, dim: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, dim, 3, 2, 1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(0.0)  # p = 0: the identity, drawing no random numbers, in either mode
        self.head = nn.Linear(dim, classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.drop(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


def minimize(opt: torch.optim.Optimizer, loss_at: Callable[[int], Tensor], steps: int) -> None:
    """``steps`` optimizer steps on ``loss_at(step)`` (which draws its own batch), then clear the gradients."""
    for step in range(steps):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)


def cyclic_batch(x: Tensor, step: int, size: int = 64, period: int = 448) -> Tensor:
    """Batch ``step`` of ``size`` consecutive images, starting over every ``period`` images: [size, ...]."""
    start = (step * size) % period
    return x[start:start + size]


def train_tiny_classifier(x: Tensor, y: Tensor, steps: int = 150, seed: int = 1) -> TinyClassifier:
    """`TinyClassifier` trained with Adam on random batches of 64 of x [N, 3, H, W], y [N]; training mode."""
    torch.manual_seed(seed)
    model = TinyClassifier()

    def loss_at(_: int) -> Tensor:
        i = torch.randint(0, len(x), (64,))
        return F.cross_entropy(model(x[i]), y[i])

    minimize(torch.optim.Adam(model.parameters(), lr=1e-2), loss_at, steps)
    return model
