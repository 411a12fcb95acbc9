"""Input transforms and labels of the self-supervised pretext tasks of Chen et al. (CVPR 2020).

"Adversarial Robustness: From Self-Supervised Pre-Training to Fine-Tuning" pretrains on three
pretext tasks, each a pure function of an image batch ``x`` [N, C, H, W] in [0, 1]:

- **Rotation** (Gidaris et al. 2018): rotate by 0/90/180/270° and predict which (4 classes).
- **Jigsaw** (Noroozi & Favaro 2016): cut into ``grid × grid`` tiles, shuffle them by one of a
  fixed set of P permutations (index 0 is the identity) and predict which (P classes). The
  official code uses a 4×4 grid of 8×8 tiles at 32×32 and P = 31 (identity + 30 random).
- **Selfie** (Trinh et al. 2019): remove M of the L patches; for each removed position, pick
  the true patch among the M removed patches of the same image. The official code uses 8×8
  patches at 32×32 (L = 16) and M = 4.

Nothing here has parameters; the networks are in `robust_mim.papers.chen.models` and the losses in
`robust_mim.papers.chen.pretext_losses`. Sampling takes an optional ``torch.Generator`` (on any device;
draws are moved to the inputs' device).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from robust_mim.errors import ConfigError

NUM_ROTATIONS = 4


def _device_of(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def _check_square(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ConfigError(f"pretext transforms need square images [N, C, H, H], got {tuple(x.shape)}")


# ----------------------------------------------------------------------------- rotation
def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Rotate each image ``x[i]`` by ``k[i]`` × 90° counter-clockwise (``torch.rot90`` on H, W).

    Args:
        x: images [N, C, H, H].
        k: quarter turns [N] (any integers; taken modulo 4).
    """
    _check_square(x)
    k = k.to(x.device) % NUM_ROTATIONS
    out = x.clone()
    for quarter in range(1, NUM_ROTATIONS):
        sel = k == quarter  # [N]
        out[sel] = torch.rot90(x[sel], quarter, dims=(2, 3))
    return out


def rotate_back(x_rot: Tensor, labels: Tensor) -> Tensor:
    """Undo `rotate` / `rotation_batch`: rotate ``x_rot[i]`` by ``-labels[i]`` quarter turns."""
    return rotate(x_rot, -labels)


def rotation_batch(x: Tensor) -> tuple[Tensor, Tensor]:
    """All four rotations of every image (RotNet): ``(x_rot [4N, C, H, H], labels [4N])``.

    Row ``j * N + i`` is image ``i`` rotated by ``j`` × 90°, label ``j``.
    """
    _check_square(x)
    x_rot = torch.cat([torch.rot90(x, j, dims=(2, 3)) for j in range(NUM_ROTATIONS)])  # [4N, C, H, H]
    labels = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(x.shape[0])  # [4N]
    return x_rot, labels


def random_rotation_batch(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One rotation per image with balanced labels, as in the official code (``rotation()``).

    Labels are a random permutation of ``[0, 1, 2, 3] * ceil(N / 4)`` cut to N, so each class
    appears ⌊N/4⌋ or ⌈N/4⌉ times. Returns ``(x_rot [N, C, H, H], labels [N])``.
    """
    n = x.shape[0]
    base = torch.arange(NUM_ROTATIONS).repeat(math.ceil(n / NUM_ROTATIONS))  # [≥N]
    order = torch.randperm(base.numel(), generator=generator, device=_device_of(generator, torch.device("cpu")))
    labels = base[order.cpu()][:n].to(x.device)  # [N]
    return rotate(x, labels), labels


# ----------------------------------------------------------------------------- jigsaw
def jigsaw_permutations(num_permutations: int = 31, grid: int = 4, seed: int = 0) -> Tensor:
    """A fixed, seeded set of distinct tile permutations; row 0 is the identity.

    The official code draws 30 random permutations of 16 tiles (4×4 grid) plus the identity
    (31 classes). At 16×16 inputs a 2×2 grid (at most 4! = 24 permutations) is the sensible
    smoke setting.

    Args:
        num_permutations: P, the number of jigsaw classes (identity included).
        grid: tiles per side; permutations act on ``grid * grid`` tiles.
        seed: seed of the (CPU) generator, so the set is reproducible across runs.

    Returns:
        LongTensor [P, grid * grid]; each row a permutation, rows unique.
    """
    n_tiles = grid * grid
    if grid < 1 or not 1 <= num_permutations <= math.factorial(n_tiles):
        raise ConfigError(f"jigsaw: cannot pick {num_permutations} distinct permutations of {n_tiles} tiles")
    gen = torch.Generator().manual_seed(seed)
    rows, seen = [torch.arange(n_tiles)], {tuple(range(n_tiles))}
    while len(rows) < num_permutations:
        perm = torch.randperm(n_tiles, generator=gen)
        if tuple(perm.tolist()) not in seen:
            seen.add(tuple(perm.tolist()))
            rows.append(perm)
    return torch.stack(rows)  # [P, grid*grid]


def inverse_permutation(perm: Tensor) -> Tensor:
    """The inverse of each permutation in the last dimension: ``perm[..., inv] == arange``."""
    return torch.argsort(perm, dim=-1)


def to_tiles(x: Tensor, grid: int) -> Tensor:
    """Cut images into a row-major ``grid × grid`` tile sequence: [N, C, H, W] → [N, T, C, h, w]."""
    n, c, h, w = x.shape
    if h % grid or w % grid:
        raise ConfigError(f"jigsaw: image {h}x{w} is not divisible into a {grid}x{grid} grid")
    t = x.reshape(n, c, grid, h // grid, grid, w // grid)
    return t.permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, h // grid, w // grid)


def from_tiles(tiles: Tensor, grid: int) -> Tensor:
    """Inverse of `to_tiles`: [N, T, C, h, w] → [N, C, grid*h, grid*w]."""
    n, _, c, h, w = tiles.shape
    t = tiles.reshape(n, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(n, c, grid * h, grid * w)


def permute_tiles(x: Tensor, perms: Tensor) -> Tensor:
    """Shuffle the tiles of each image: output tile ``j`` is input tile ``perms[i, j]``.

    Args:
        x: images [N, C, H, W].
        perms: one permutation per image [N, T] with ``T = grid * grid``.
    """
    grid = math.isqrt(perms.shape[-1])
    tiles = to_tiles(x, grid)  # [N, T, C, h, w]
    index = perms.to(x.device)[:, :, None, None, None].expand_as(tiles)
    return from_tiles(torch.gather(tiles, 1, index), grid)


def jigsaw_batch(x: Tensor, perms: Tensor, generator: torch.Generator | None = None,
                 identity_prob: float = 0.1) -> tuple[Tensor, Tensor]:
    """Shuffle each image by a sampled permutation of ``perms``; the label is its row index.

    As in the official code (``jigsaw(..., bias=0.9)``), a label is drawn uniformly from the P
    classes and then replaced by 0 (identity) with probability ``identity_prob``.

    Args:
        x: images [N, C, H, W], H and W divisible by the grid (``sqrt(perms.shape[1])``).
        perms: permutation set [P, T] from `jigsaw_permutations`.
        generator: optional RNG for the labels.
        identity_prob: extra probability of the unshuffled image (0.1 officially).

    Returns:
        ``(x_shuffled [N, C, H, W], labels [N])``; ``permute_tiles(x_shuffled,
        inverse_permutation(perms[labels])) == x``.
    """
    n, dev = x.shape[0], _device_of(generator, x.device)
    labels = torch.randint(perms.shape[0], (n,), generator=generator, device=dev)  # [N]
    keep = torch.rand(n, generator=generator, device=dev) < identity_prob  # [N]
    labels = torch.where(keep, torch.zeros_like(labels), labels).to(x.device)
    return permute_tiles(x, perms.to(x.device)[labels]), labels


# ----------------------------------------------------------------------------- selfie
def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Row-major non-overlapping patches, each flattened as (C, p, p): [N, C, H, W] → [N, L, C*p*p]."""
    _check_square(x)
    if x.shape[-1] % patch_size:
        raise ConfigError(f"selfie: image side {x.shape[-1]} is not divisible into {patch_size}-pixel patches")
    return to_tiles(x, x.shape[-1] // patch_size).flatten(2)  # [N, L, C*p*p]


def unpatchify(patches: Tensor, patch_size: int, channels: int = 3) -> Tensor:
    """Inverse of `patchify`: [N, L, C*p*p] → [N, C, H, H]."""
    n, length, _ = patches.shape
    grid = math.isqrt(length)
    return from_tiles(patches.reshape(n, length, channels, patch_size, patch_size), grid)


def selfie_mask(n: int, num_patches: int, num_masked: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Sample which patches Selfie removes and how the candidates are ordered.

    Args:
        n: batch size N.
        num_patches: L patches per image.
        num_masked: M removed patches per image (M ≥ 1, M < L).
        generator: optional RNG.
        device: where the index tensors live.

    Returns:
        ``masked`` [N, M] removed positions; ``visible`` [N, L] bool (True = kept);
        ``candidate_positions`` [N, M] the removed positions in shuffled order (candidate k is the
        patch from position ``candidate_positions[:, k]``); ``target`` [N, M] with
        ``candidate_positions[i, target[i, m]] == masked[i, m]``.
    """
    if not 1 <= num_masked < num_patches:
        raise ConfigError(f"selfie: num_masked must be in [1, {num_patches - 1}], got {num_masked}")
    dev = _device_of(generator, torch.device(device))
    noise = torch.rand(n, num_patches, generator=generator, device=dev)
    masked = noise.argsort(dim=1)[:, :num_masked].sort(dim=1).values.to(device)  # [N, M]
    shuffle = torch.rand(n, num_masked, generator=generator, device=dev).argsort(dim=1).to(device)  # [N, M]
    candidate_positions = torch.gather(masked, 1, shuffle)  # [N, M]
    target = inverse_permutation(shuffle)  # [N, M]: masked[m] sits at candidate target[m]
    visible = torch.ones(n, num_patches, dtype=torch.bool, device=device).scatter(1, masked, False)
    return {"masked": masked, "visible": visible, "candidate_positions": candidate_positions, "target": target}


def selfie_apply(x: Tensor, patch_size: int, mask: dict[str, Tensor]) -> dict[str, Tensor]:
    """Apply a fixed `selfie_mask` to images (differentiably in ``x``, so attacks can use it).

    Returns the mask entries plus ``patches`` [N, L, C*p*p], ``candidates`` [N, M, C*p*p]
    (the removed patches in candidate order) and ``context`` [N, C, H, W] (``x`` with the
    removed patches set to 0).
    """
    patches = patchify(x, patch_size)  # [N, L, C*p*p]
    index = mask["candidate_positions"][:, :, None].expand(-1, -1, patches.shape[-1])
    candidates = torch.gather(patches, 1, index)  # [N, M, C*p*p]
    keep = mask["visible"][:, :, None].to(x.dtype)  # [N, L, 1]
    context = unpatchify(patches * keep, patch_size, x.shape[1])  # [N, C, H, W]
    return {**mask, "patches": patches, "candidates": candidates, "context": context}


def selfie_batch(x: Tensor, patch_size: int, num_masked: int,
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Selfie inputs and targets for a batch: `selfie_mask` sampled, then `selfie_apply`.

    Args:
        x: images [N, C, H, H], H divisible by ``patch_size``.
        patch_size: p (8 at 32×32 officially, so L = 16).
        num_masked: M removed patches per image (4 officially).
        generator: optional RNG.

    Returns:
        dict with ``patches`` [N, L, C*p*p], ``masked`` [N, M], ``visible`` [N, L] bool,
        ``candidates`` [N, M, C*p*p] (every masked position of an image shares this candidate
        set), ``candidate_positions`` [N, M], ``target`` [N, M] (``candidates[i, target[i, m]]
        == patches[i, masked[i, m]]``) and ``context`` [N, C, H, W].
    """
    num_patches = (x.shape[-1] // patch_size) ** 2
    mask = selfie_mask(x.shape[0], num_patches, num_masked, generator, x.device)
    return selfie_apply(x, patch_size, mask)
