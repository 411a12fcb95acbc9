"""What DAT's official code (alibaba/easyrobust; hendrycks/robustness for the corruptions) computes differently.

One row per difference: what the official code does, what we do (per profile where they differ), why, and
whether it can change the result. The paper's notebook renders it under its tables (`robust_mim.reporting.deviations`).
"""
from __future__ import annotations

from robust_mim.reporting.deviations import Deviation, IMAGENET_SUBSET, cpu_budget, row

ROWS: tuple[Deviation, ...] = (
    row("discrete space",
         "a pretrained ImageNet VQGAN (f = 8, 16,384 codes) downloaded by the official code",
         "a small VQ-VAE trained by the pipeline (cifar10: f = 4, 512 codes, 50 epochs; imagenet: f = 8, 16,384 "
         "codes, 10 epochs), no perceptual/adversarial loss",
         "no pretrained VQGAN at 32×32; the pipeline trains everything it uses",
         "yes (how far Q(x) is from x and how often δ changes a code; see codes_changed in the training log)"),
    row("model and budget",
         "MAE-ViT-H (and ViT-B, ResNet-50) fine-tuned on ImageNet-1k",
         "ViT-Tiny/4 on CIFAR-10 (cifar10), ViT-B/16 on ImageNet (imagenet), the profile's epochs",
         "GPU time", "yes (absolute mCE and accuracy)"),
    row("soft targets",
         "MixUp, CutMix and label smoothing kept in DAT runs; the attack criterion is the soft-target CE "
         "(attack_criterion='mixup', timm SoftTargetCrossEntropy), as is the loss",
         "the same: the DAT step takes soft targets [N, K] (soft-target CE in the attack and both loss terms); "
         "imagenet: mae-dat has mae-ft's MixUp 0.8, CutMix 1.0 and label smoothing 0.1; cifar10/smoke/test: "
         "neither the DAT runs nor their references use them",
         "matches the official code", "no"),
    row("random start and re-quantisation",
         "random start on the L2 sphere with probability 0.8; Q applied as is",
         "random start uniform inside the L2 ball, always; re-quantisation with a straight-through estimator",
         "the shared L2 threat ball; the paper's gradient rule for Q", "unlikely (one step of ε = 0.1)"),
    row("mCE",
         "ImageNet-C mCE: each corruption's error (mean over severities 1-5) divided by AlexNet's published "
         "error, averaged over the 15 corruptions (easyrobust evaluate_imagenet_c, get_ce_alexnet)",
         "imagenet: the same (corruption_benchmark.alexnet_mce, the same AlexNet constants), column 'mCE, "
         "AlexNet-normalised'; every profile also shows the unnormalised mean corruption error and the error "
         "relative to its standard model from scratch (100 = that model), labelled as such; CIFAR-10-C and "
         "generated corruptions get no AlexNet-normalised number",
         "AlexNet's errors are ImageNet-C constants: dividing CIFAR-10-C or generated errors by them would "
         "not be the paper's measure",
         "yes (only the imagenet profile's AlexNet-normalised mCE is comparable with the paper's 31.40)"),
    row("corruption data",
         "all 50,000 images of each ImageNet-C folder; CIFAR-10-C files where CIFAR is used",
         "imagenet: the ImageNet-C files (dat.corruption.imagenet_c_root), the class-stratified 1000 images of "
         "each folder (the clean subset, file for file); cifar10: all 10,000 images of each CIFAR-10-C block; "
         "smoke/test: corruptions generated on the fly (robust_mim.corruptions; frost synthetic). Each record "
         "names its benchmark (corruption_benchmark) and its images (provenance.evaluation_subset)",
         "ImageNet-C evaluation cost (75 folders); smoke/test must run without downloads",
         "yes (imagenet: ±1.5 points of binomial noise per cell; smoke/test numbers are not benchmark numbers)"),
    row("standard reference",
         "DAT models compared with standard-trained models of the same architecture",
         "each DAT model against the standard model with its init (dat-scratch vs scratch, mae-dat vs mae-ft); "
         "the relative error divides by the from-scratch standard model (imagenet: scratch, the MAE paper's "
         "supervised ViT-B recipe without its RandAugment and EMA; configured, not yet run)",
         "the profile trains every model it compares", "yes (the reference's recipe sets the relative error)"),
    row("other benchmarks",
         "Stylized-ImageNet, ImageNet-A/-R/-Sketch, ImageNet-V2",
         "not evaluated", "not part of the pipeline", "no (missing, not different)"),
    IMAGENET_SUBSET,
    cpu_budget(
        "a small VQ-VAE (f = 4, 512 codes of dimension 16) trained 3 epochs instead of a pretrained VQGAN; "
        "the 15 corruptions × 5 severities generated from all 10,000 test images (not the published "
        "CIFAR-10-C files)",
        "yes (a weaker discrete space changes DAT's perturbation; generated corruptions are close to, not "
        "equal to, CIFAR-10-C)"),
)
