"""What Chen et al. (CVPR 2020)'s official code (TAMU-VITA/Adv-SS-Pretraining) computes differently from ours.

One row per difference: what the official code does, what we do (per profile where they differ), why, and
whether it can change the result. The paper's notebook renders it under its tables (`robust_mim.reporting.deviations`).
"""
from __future__ import annotations

from robust_mim.reporting.deviations import Deviation, row

ROWS: tuple[Deviation, ...] = (
    row("backbone", "ResNet-50v2 (resnetv2.py)", "ResNet-18", "GPU time",
         "yes (absolute accuracies; the P/F comparisons may carry over)"),
    row("optimisers and schedules",
         "SGD momentum 0.9, lr 0.1, weight decay 3e-4 (ensemble pretraining: lr 1e-3, wd 1e-4), batch 128; "
         "pretext 100-200 epochs with cosine annealing; fine-tuning 100 epochs, lr ÷10 at epochs 60 and 80 "
         "(TRADES scripts 40, 60), 200 warm-up iterations",
         "AdamW (pretext blr 1e-3, fine-tuning blr 5e-4), weight decay 0.05, batch 256, warmup + cosine; pretext "
         "100 epochs, fine-tuning 50",
         "one engine for every paper", "yes (robust accuracy of PGD-AT depends on the schedule)"),
    row("Selfie",
         "each patch encoded separately by the network up to layer3, attention pooling over the visible "
         "patches' codes, the queried position's embedding added, candidates scored by dot product",
         "the backbone encodes the whole image with removed patches blanked (context) and each candidate patch; "
         "query = W·context + row/column embedding of the removed position (a Selfie-like task)",
         "a much cheaper forward pass", "yes (the Selfie rows test a simplified task)"),
    row("adversarial fine-tuning attack mode",
         "PGD-10 generated with the model in train mode (BatchNorm uses and updates batch statistics)",
         "PGD-10 with the model in eval mode, the loss in train mode",
         "the TRADES convention of the shared PGD-AT", "yes (BatchNorm statistics differ during the attack)"),
    row("validation split",
         "pretraining holds out 10% of the training set (valid_size 0.1)",
         "pretraining and fine-tuning use all 50,000 training images",
         "no model selection here", "unlikely"),
    row("ensemble fine-tuning",
         "model_ensemble.py: one three-branch model (a ResNet-50v2 per pretext pretraining, softmax outputs "
         "averaged) adversarially fine-tuned as a whole",
         "three separately PGD-AT-fine-tuned models, their softmax outputs averaged at test time",
         "reuses the grid's F4 runs", "yes (the ensemble rows)"),
)
