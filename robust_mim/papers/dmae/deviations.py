"""What DMAE's official code (quanlin-wu/dmae, with locuslab/smoothing) computes differently from ours.

One row per difference: what the official code does, what we do (per profile where they differ), why, and
whether it can change the result. The paper's notebook renders it under its tables (`robust_mim.reporting.deviations`).
"""
from __future__ import annotations

from robust_mim.reporting.deviations import Deviation, IMAGENET_SUBSET, MAE_INIT, MAE_POOL, OPTIMISER_LOOP, row

ROWS: tuple[Deviation, ...] = (
    row("model and data path (cifar10 profile)",
         "ViT-B/16: DMAE pretrained 1100 epochs on ImageNet, continued 50 epochs on CIFAR-10 (blr 5e-5, batch "
         "512), CIFAR images resized to 224 (bicubic) after the noise",
         "ViT-Tiny/4 pretrained 200 epochs on CIFAR-10 at 32×32, no ImageNet stage",
         "one GPU", "yes (the paper's certified accuracies rely on the ImageNet-pretrained ViT-B)"),
    row("norm_pix_loss",
         "pretraining with --norm_pix_loss", "cifar10: off; imagenet: on",
         "the cifar10 profile shares one MAE run among the papers", "unlikely"),
    row("fine-tuning recipe (cifar10)",
         "finetune_cifar10.py: 50 epochs, blr 5e-4 at batch 256, layer decay 0.65, drop path 0.1, label "
         "smoothing 0.1, flip-only augmentation, min lr 1e-6",
         "50 epochs, blr 5e-4 at batch 256, no layer decay, no label smoothing, crop + flip, the engine's min lr",
         "shared fine-tuning recipe of the profile",
         "yes (base-classifier accuracy under noise sets the certified radius)"),
    row("certification",
         "CIFAR-10: N = 100,000 noise draws on the entire test set (sample_interval 1); ImageNet: every 50th "
         "validation image",
         "N = 10,000 on the first 500 test images (cifar10), which caps the certifiable radius at 0.80 / 1.60 / "
         "3.20 for σ = 0.25 / 0.5 / 1.0",
         "GPU time (12 models)",
         "yes (fewer draws lower every radius; the largest radii of the σ = 0.25 table are out of reach)"),
    MAE_INIT, MAE_POOL, OPTIMISER_LOOP, IMAGENET_SUBSET,
)
