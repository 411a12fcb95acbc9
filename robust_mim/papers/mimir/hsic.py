"""MIMIR (Xu et al.): adversarial MAE pretraining with an HSIC mutual-information penalty.

The MAE encoder sees an adversarial image x′ (1-step PGD on the MAE loss, ε = 8/255,
step 10/255, random start, fresh mask) while the reconstruction target stays the clean x;
an HSIC penalty between the encoder's latent z and x′ bounds I(x′; z):

    L_MIMIR = L_MAE(x′ → x) + λ · HSIC(z, x′),      λ = 1e-5 (official)

Notes from the official code (github.com/xiaoyunxxy/MIMIR, ``pretrain.py``, ``MI/hsic.py``,
``pgd_mae/pgd_mae.py``), which follows the HSIC-bottleneck code (Ma et al. 2020):

- latent z: the encoder output after the final norm, CLS token plus the visible-patch tokens,
  ``[N, 1+L_keep, D]`` flattened to ``[N, (1+L_keep)·D]``; x′ is flattened to ``[N, 3HW]``.
- kernel: Gaussian with a fixed σ = 5 scaled by the feature dimension d,
  k(a, b) = exp(−‖a − b‖² / (2σ²d)) (``kernelmat`` with ``sigma=5``).
- estimators: the training loop calls ``hsic_normalized_cca`` (tr(K̃x K̃y) with
  K̃ = K̄(K̄ + εmI)⁻¹, ε = 1e-5); the kernel-alignment ``hsic_normalized`` ∈ [0, 1] is the
  other one here. Which one a run uses is its setting ``hsic`` (its default is stated once, in
  config/schema.yaml); the functions here take the estimator as an argument.
- batch: each GPU computes the penalty on its own batch (128 images in the CIFAR-10 script,
  512 in the ImageNet one) and DDP averages the gradients, i.e. the penalty is the mean over
  per-GPU groups; `grouped_hsic` does the same on one process's batch (setting ``hsic_group``).
- the official PGD_MAE attack calls ``model(x′)``, i.e. its attack loss reconstructs x′
  itself; the paper (and ``mimir_adversarial_input`` here, through the caller's closure)
  reconstructs the clean x.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from robust_mim.errors import AttackInputError

HSICFn = Callable[[Tensor, Tensor, float | None, float | None], Tensor]  # (x, y, sigma_x, sigma_y)

CCA_EPSILON = 1e-5  # official ridge in hsic_normalized_cca


def _check_paired(x: Tensor, y: Tensor) -> None:
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise AttackInputError(f"HSIC needs paired batches of ≥2 examples, got {x.shape[0]} and {y.shape[0]}")


def _flatten_float(z: Tensor) -> Tensor:
    """[N, ...] → [N, d] in float32 or wider (HSIC is ill-conditioned in half precision)."""
    z = z.reshape(z.shape[0], -1)
    return z.to(torch.promote_types(z.dtype, torch.float32))


def centered_gaussian_gram(z: Tensor, sigma: float | None = None) -> Tensor:
    """Doubly-centred Gaussian Gram matrix K̄ = H K H of a batch.

    Args:
        z: features [N, d] (already flattened, float32+).
        sigma: kernel width per feature dimension: k(a, b) = exp(−‖a−b‖² / (2σ²d)) as in the
            official code; ``None`` uses the median heuristic exp(−‖a−b‖² / (2·med²)) with
            med the median pairwise distance (detached).

    Returns:
        K̄ [N, N]. Built from expm1 (K − 1 has the same centring) for precision at wide σ.
    """
    zc = z - z.mean(dim=0, keepdim=True)  # distances are shift-invariant; less cancellation
    sq = zc.pow(2).sum(dim=1)
    dist2 = (sq[:, None] + sq[None, :] - 2.0 * zc @ zc.T).clamp_min(0.0)  # [N, N]
    if sigma is None:
        off = dist2.detach()[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
        width2 = off.median().clamp_min(1e-12) if off.numel() else dist2.new_tensor(1.0)
    else:
        width2 = dist2.new_tensor(float(sigma) ** 2 * z.shape[1])
    k_minus_1 = torch.expm1(-dist2 / (2.0 * width2))  # [N, N]
    k_minus_1 = k_minus_1 - k_minus_1.mean(dim=0, keepdim=True)
    return k_minus_1 - k_minus_1.mean(dim=1, keepdim=True)


def hsic_normalized(x: Tensor, y: Tensor, sigma_x: float | None = None,
                    sigma_y: float | None = None) -> Tensor:
    """Normalized HSIC nHSIC(X, Y) = HSIC(X, Y) / sqrt(HSIC(X, X) · HSIC(Y, Y)) ∈ [0, 1].

    With biased HSIC = tr(Kx H Ky H)/m² this is the kernel alignment ⟨K̄x, K̄y⟩_F /
    (‖K̄x‖_F ‖K̄y‖_F) — the official ``hsic_normalized``. Near 0 for independent batches
    of low-dimensional data, 1 when the two Gram matrices agree. Biased: for unstructured
    high-dimensional data (d ≫ N, e.g. i.i.d. noise) every centred Gram is ≈ c·H, so two
    independent noise batches align near 1; on real images it separates dependent from
    shuffled pairs well. A batch statistic: it couples all N examples. Differentiable;
    computed on the inputs' device in float32 or wider, outside autocast.

    Args:
        x: [N, ...] first batch (flattened per example).
        y: [N, ...] paired second batch.
        sigma_x: Gaussian width per dimension for x (official: 5.0); None = median heuristic.
        sigma_y: same for y.

    Returns:
        Scalar tensor.
    """
    _check_paired(x, y)
    with torch.autocast(device_type=x.device.type, enabled=False):
        kx = centered_gaussian_gram(_flatten_float(x), sigma_x)  # [N, N]
        ky = centered_gaussian_gram(_flatten_float(y), sigma_y)  # [N, N]
        num = (kx * ky).sum()
        den = (torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky)).clamp_min(1e-30)
        return num / den


def hsic_normalized_cca(x: Tensor, y: Tensor, sigma_x: float | None = None,
                        sigma_y: float | None = None, epsilon: float = CCA_EPSILON) -> Tensor:
    """The official training penalty (HSIC-bottleneck ``hsic_normalized_cca``): tr(K̃x K̃y).

    K̃ = K̄ (K̄ + ε m I)⁻¹ is a soft projection onto the Gram matrix's leading eigenvectors,
    so the value lies in [0, m − 1] (not [0, 1]) and mostly counts the eigenvalues of K̄
    above ε m: at the median width it is ≈ m − 1 for any data, and at σ = 5 it can score an
    independent noise latent above a dependent one — prefer ``hsic_normalized`` to measure.
    Equal to the official one-sided-centring formula (tr is unchanged by H).

    Args:
        x: [N, ...] first batch.
        y: [N, ...] paired second batch.
        sigma_x: Gaussian width per dimension for x; None = median heuristic.
        sigma_y: same for y.
        epsilon: ridge ε (official 1e-5).

    Returns:
        Scalar tensor.
    """
    _check_paired(x, y)
    with torch.autocast(device_type=x.device.type, enabled=False):
        kx = centered_gaussian_gram(_flatten_float(x), sigma_x)  # [N, N]
        ky = centered_gaussian_gram(_flatten_float(y), sigma_y)  # [N, N]
        ridge = epsilon * len(kx) * torch.eye(len(kx), device=kx.device, dtype=kx.dtype)
        rx = torch.linalg.solve(kx + ridge, kx)  # symmetric, commutes with kx
        ry = torch.linalg.solve(ky + ridge, ky)
        return (rx * ry).sum()


def grouped_hsic(hsic_fn: HSICFn, z: Tensor, x: Tensor, sigma: float | None, group_size: int) -> Tensor:
    """Mean of ``hsic_fn`` over groups of about ``group_size`` examples — the official per-GPU penalty.

    The batch splits into k = max(1, N // group_size) contiguous groups whose sizes differ by at
    most one (each ≥ ``group_size`` when N ≥ ``group_size``; a smaller batch is one group). With
    N = k · group_size this is the official value: each of k GPUs computes the penalty on its own
    batch of ``group_size`` and DDP averages their gradients.

    Args:
        hsic_fn: an estimator ``(x, y, sigma_x, sigma_y) -> scalar``.
        z: latents [N, ...]; x: paired inputs [N, ...] (both flattened per example by the estimator).
        sigma: Gaussian width per feature dimension for both kernels; None = median heuristic.
        group_size: the official per-GPU batch (CIFAR-10 script: 128).

    Returns:
        Scalar tensor, the mean over groups.
    """
    if group_size < 2:
        raise AttackInputError(f"HSIC groups need at least 2 examples, got group_size {group_size}")
    _check_paired(z, x)
    groups = torch.arange(z.shape[0], device=z.device).tensor_split(max(1, z.shape[0] // group_size))
    return torch.stack([hsic_fn(z[g], x[g], sigma, sigma) for g in groups]).mean()


def mimir_adversarial_input(mae_loss_of_input: Callable[[Tensor], Tensor], x: Tensor, eps: float,
                            step_size: float, *, steps: int, random_start: bool = True,
                            generator: torch.Generator | None = None) -> Tensor:
    """MIMIR's pretraining attack: L∞ PGD ascending the MAE loss (MIMIR: 1 step).

    x′ = Π_{B∞(x, ε) ∩ [0,1]}(x₀ + α · sign ∇ L(x₀)), x₀ = clip(x + U(−ε, ε)) — the loss is a
    function of the encoder's input only; the caller's closure draws a fresh random mask at
    every call and reconstructs the clean x. Parameter gradients are not touched.

    Args:
        mae_loss_of_input: candidate [N, 3, H, W] → scalar MAE loss (a [N] loss is summed).
        x: clean images [N, 3, H, W] in [0, 1].
        eps: L∞ radius (pixels in [0, 1]); official 8/255.
        step_size: α; official 10/255 (``--alpha 0.0392``).
        steps: PGD steps; MIMIR uses 1.
        random_start: start uniformly in the ε-ball (official: yes).
        generator: RNG for the random start (must live on x's device).

    Returns:
        Detached x′ [N, 3, H, W] with ‖x′ − x‖∞ ≤ ε and x′ ∈ [0, 1].
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise AttackInputError(f"need eps, step_size, steps ≥ 0, got {eps}, {step_size}, {steps}")
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + (2.0 * noise - 1.0) * eps).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = mae_loss_of_input(x_adv)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def mimir_loss(recon_loss: Tensor, latent: Tensor, x_adv: Tensor, lam: float, *, sigma: float | None,
               hsic_fn: HSICFn, group_size: int) -> tuple[Tensor, dict[str, float]]:
    """L_MIMIR = L_recon + λ · HSIC(z, x′), HSIC averaged over groups (`grouped_hsic`); both terms logged.

    Args:
        recon_loss: scalar MAE loss of the decoder's reconstruction of the clean x from x′.
        latent: encoder output on x′, [N, 1+L_keep, D] (CLS + visible tokens, as the
            official code) or any [N, ...]; flattened per example.
        x_adv: the encoder's adversarial input [N, 3, H, W] (detached).
        lam: λ, the HSIC weight (official 1e-5). λ = 0 returns ``recon_loss`` itself.
        sigma: Gaussian width per dimension for both kernels (official 5.0); None = median.
        hsic_fn: the estimator, ``hsic_normalized_cca`` (official) or ``hsic_normalized``.
        group_size: examples per HSIC group (the official per-GPU batch).

    Returns:
        (total scalar loss, {"recon", "hsic", "total"} as floats).
    """
    if lam == 0:
        with torch.no_grad():
            hsic = grouped_hsic(hsic_fn, latent, x_adv, sigma, group_size)
        total = recon_loss
    else:
        hsic = grouped_hsic(hsic_fn, latent, x_adv, sigma, group_size)
        total = recon_loss + lam * hsic
    parts = {"recon": float(recon_loss.detach()), "hsic": float(hsic.detach()), "total": float(total.detach())}
    return total, parts
