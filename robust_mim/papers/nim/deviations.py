"""What NIM / De³'s official code (youzunzhi/NIM-AdvDef) computes differently from ours.

One row per difference: what the official code does, what we do (per profile where they differ), why, and
whether it can change the result. The paper's notebook renders it under its tables (`robust_mim.reporting.deviations`).
"""
from __future__ import annotations

from robust_mim.reporting.deviations import (Deviation, IMAGENET_SUBSET, MAE_INIT, MAE_POOL, NORM_PIX_SPACE, OPTIMISER_LOOP,
                                             cpu_budget, row)

ROWS: tuple[Deviation, ...] = (
    row("model and schedule (cifar10 profile)",
         "ViT-B/16 on ImageNet-1k, pretraining 800 epochs (batch 4096, blr 1.5e-4, warmup 40), "
         "De³ fine-tuning 100 epochs; the paper has no CIFAR-10 recipe",
         "ViT-Tiny/4 on CIFAR-10 32×32, pretraining 200 epochs (batch 512, warmup 10), fine-tuning 50 epochs",
         "one GPU for a few hours", "yes (absolute numbers; the paper's comparisons may or may not carry over)"),
    row("fine-tuning recipe",
         "AdamW base lr 1e-3 × 1024/256, layer decay 0.75, MixUp 0.8, CutMix 1.0, label smoothing 0.1, "
         "warmup 5, min lr 1e-6, batch 1024",
         "cifar10: blr 5e-4, no layer decay, no MixUp/CutMix/label smoothing, batch 256; imagenet: MAE's "
         "recipe (blr 5e-4, layer decay 0.65) with MixUp/CutMix/label smoothing",
         "the shared fine-tuning recipe of each profile", "yes (clean accuracy, hence the whole trade-off)"),
    row("MAE baseline classifier",
         "the official finetune.py can fine-tune the mae framework only with --on_original (its denoising path "
         "calls MAE's forward with an image as mask ratio); which classifier the paper's MAE-De³ row used is not "
         "in the code",
         "mae-de3 fine-tunes the MAE encoder on original images (method standard)",
         "the only runnable reading of the official code", "yes (the MAE-De³ row)"),
    row("MAE baseline γ",
         "eval_attack.py sweeps the MAE's mask ratio γ = σ/100 over its σ list (0 to 1 in steps of 0.05)",
         "mae-de3's headline defense masks γ = 0.75 (the MAE's pretraining ratio); the sweep's levels v < 100 are "
         "γ = v/100 (the sweep takes the run's degradation from defenses.de3_degradation)",
         "one headline row per model; the sweep shows the rest", "yes (the MAE-De³ trade-off)"),
    row("σ_test sweep levels",
         "README: σ_test ∈ {-5, 70, 140}/255 (eval_attack.py steps by 5/255 up to 300/255); -5 means no "
         "defense at all (the classifier alone)",
         "0 to 140/255 in steps of 10/255; 0 is De³ without noise (denoise only); the undefended classifier is "
         "the *-ft rows of the robustness suite",
         "15 attack runs per model", "no (coarser grid, same range)"),
    row("attacks",
         "torchattacks FGSM 4/255, PGD-10 (step 2/255, random start) at 4/255 and AutoAttack, one noise draw per "
         "gradient (no EOT); gray-box = attack the classifier alone",
         "the shared suite: PGD with EOT over evaluation.eot_samples noise draws, Square, APGD, gray-box, at the "
         "profile's ε grid (cifar10 headline 8/255, imagenet 4/255)",
         "a randomized defense must be attacked with EOT (Athalye et al. 2018)",
         "yes (EOT is stronger: our robust accuracy can be lower than the paper's)"),
    row("evaluation images",
         "all 50,000 ImageNet validation images (5,000 for AutoAttack)",
         "cifar10: 1000 CIFAR-10 test images (torchvision's order; a class-sorted ImageFolder copy gets a "
         "class-stratified subset); imagenet: see 'ImageNet evaluation images'",
         "attack cost", "unlikely on CIFAR-10 (±1.5 points of binomial noise at n = 1000)"),
    NORM_PIX_SPACE, MAE_INIT, MAE_POOL, OPTIMISER_LOOP, IMAGENET_SUBSET,
    cpu_budget(
        "the Gamma sampler only (no uniform / fixed ablation), De³ at the official 70/255 with the σ_test "
        "sweep 0-140/255",
        "yes (a short pretraining gives a weaker denoiser; the claim is tested at this budget only)"),
)
