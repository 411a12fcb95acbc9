"""What Chen et al. (CVPR 2020)'s official code (TAMU-VITA/Adv-SS-Pretraining) computes differently from ours.

One row per difference: what the official code does, what we do (per profile where they differ), why, and
whether it can change the result. The paper's notebook renders it under its tables (`robust_mim.reporting.deviations`).
"""
from __future__ import annotations

from robust_mim.reporting.deviations import Deviation, cpu_budget, row

ROWS: tuple[Deviation, ...] = (
    row("backbone", "ResNet-50v2 (resnetv2.py)", "ResNet-18", "GPU time",
         "yes (absolute accuracies; the P/F comparisons may carry over)"),
    row("optimisers and schedules",
         "SGD momentum 0.9, lr 0.1, weight decay on every parameter, batch 128 (README). Pretext (cosine per step): "
         "rotation, adversarial jigsaw wd 3e-4, standard jigsaw 5e-4, to lr 1e-6, 200 warm-up iterations "
         "(0.01 → 0.1); Selfie Nesterov, wd 1e-4, to 1e-7, no warm-up; ensemble_pretrain.py Nesterov, lr 1e-3, "
         "wd 1e-4, batch 80 (script default; README 32), to 1e-8. Adversarial fine-tuning (main.py): wd 3e-4, "
         "MultiStepLR ÷10 at epochs 60 and 80 of 100 (TRADES scripts 40, 60), 200 warm-up iterations; epochs: "
         "adversarial rotation/jigsaw pretext 100, the other pretext runs 200, ensemble 150, fine-tuning 100",
         "cifar10: the same optimisers, learning rates, weight decays, batch sizes and schedule shapes "
         "(optimizer sgd, schedule cosine / step) with epochs reduced (pretext 100, fine-tuning 50 with its "
         "milestones scaled to 30 and 40); warm-up from 0 over 0.5 epoch (≈ 195 iterations) rather than from "
         "0.01 over 200; bf16 autocast; standard fine-tuning (F1/F3), for which the official code has no script, "
         "uses the adversarial fine-tuning recipe. smoke / test: AdamW with warmup + cosine and a few epochs "
         "(the profiles' shared fine-tuning settings; smoke: ResNet-18 at 1/8 width)",
         "GPU time (epochs); the small profiles test the pipeline, not the recipe",
         "yes (cifar10: through the halved epochs and the shorter step schedule; smoke / test: the whole recipe)"),
    row("Selfie",
         "each patch encoded separately by the network up to layer3, attention pooling over the visible "
         "patches' codes, the queried position's embedding added, candidates scored by dot product; the loss "
         "sums the per-position cross-entropies of softmax outputs (a double softmax)",
         "the backbone encodes the whole image with removed patches blanked (context) and each candidate patch; "
         "query = W·context + row/column embedding of the removed position; cross-entropy of the logits averaged "
         "over positions. Records, tables, claims and notebook 04 call the task and its rows \"selfie-like\"",
         "a much cheaper forward pass; the faithful task (separate patch encoding + attention pooling) is not "
         "implemented", "yes (the selfie-like rows test a simplified task, not the paper's Selfie)"),
    row("Selfie augmentation (cifar10)",
         "pad 2, random 32×32 crop, no flip",
         "random translation by up to 4 pixels (augment crop: zero padding of H/8), no flip",
         "one crop size for every run", "unlikely"),
    row("adversarial fine-tuning attack mode",
         "PGD-10 generated with the model in train mode (BatchNorm uses and updates batch statistics at every "
         "attack step)",
         "cifar10: the same (pgd_at attack_mode train); smoke / test: eval mode, the pgd_at default (MIMIR's "
         "torchattacks PGD and TRADES attack in eval mode)",
         "the default keeps the other papers' runs as they were",
         "yes for smoke / test (BatchNorm statistics differ during the attack); cifar10: no"),
    row("pretext heads",
         "linear heads on the ResNet features; the ensemble pretraining model gives Rotation and Jigsaw each "
         "their own copy of the last stage",
         "linear heads on the pooled features of one shared backbone, its last stage included",
         "one backbone to export for fine-tuning", "unlikely for single tasks; yes for the multi-task run"),
    row("validation split",
         "pretraining and fine-tuning hold out 10% of the training set (valid_size 0.1) and keep the epoch of "
         "best validation accuracy / ATA",
         "pretraining and fine-tuning use all 50,000 training images; the last epoch is evaluated",
         "no model selection here", "unlikely (the official test numbers use the best-ATA checkpoint: slightly higher)"),
    row("ensemble fine-tuning",
         "model_ensemble.py: one three-branch model (a ResNet-50v2 per pretext pretraining, softmax outputs "
         "averaged) adversarially fine-tuned as a whole",
         "three separately PGD-AT-fine-tuned models, their softmax outputs averaged at test time",
         "reuses the grid's F4 runs", "yes (the ensemble rows)"),
    cpu_budget(
        "the rotation task only, on the profile's ViT (not ResNet-50v2; no selfie-like task), pretext "
        "pretraining 5 epochs (P3 with PGD-2) and fine-tuning F4 with the shared AdamW recipe and PGD-AT "
        "(not the official SGD recipes); the TA / ATA evaluation with PGD-20",
        "yes (the headline claim is about Selfie; rotation P3 vs P1 is the comparison run here)"),
)
