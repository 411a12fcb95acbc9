"""What we compute differently from each paper's official code: one table per paper, kept here once.

Each row says what the official code does, what this repository does (per profile where they
differ), why, and whether the difference can change the result the paper's tables report. The
paper notebooks render `deviation_table` under their numbers; nothing else should restate these.
Official code read: youzunzhi/NIM-AdvDef (NIM), xiaoyunxxy/MIMIR, quanlin-wu/dmae,
TAMU-VITA/Adv-SS-Pretraining (Chen et al.), alibaba/easyrobust (DAT), facebookresearch/mae
(the MAE code the three MIM papers build on), hendrycks/robustness (CIFAR-10-C / ImageNet-C).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from robust_mim.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("aspect", "official", "ours", "why", "can_change_result")


@dataclass(frozen=True)
class Deviation:
    """One difference between the official code and ours. ``can_change_result``: yes / unlikely / no."""

    aspect: str
    official: str
    ours: str
    why: str
    can_change_result: str


def _row(aspect: str, official: str, ours: str, why: str, can_change_result: str) -> Deviation:
    return Deviation(aspect, official, ours, why, can_change_result)


# Rows shared by the three MAE-based papers (NIM, MIMIR, DMAE).
_MAE_INIT = _row(
    "MAE weight initialisation",
    "xavier_uniform for every Linear and the patch projection, LayerNorm (1, 0) (models_mae.initialize_weights)",
    "timm's ViT initialisation for the encoder; PyTorch defaults for the decoder's Linear layers",
    "the encoder is the timm ViT the classifiers load without renaming",
    "unlikely (initialisation only; long pretraining)")
_MAE_POOL = _row(
    "classifier pooling",
    "MAE fine-tuning ViT: mean of patch tokens, then a fresh fc_norm (the encoder's final norm removed)",
    "final norm on every token, then the mean of patch tokens (fc_norm off), so all pretrained weights load",
    "one backbone for the MAE encoder and the classifier, loaded strictly",
    "unlikely (a LayerNorm before vs after pooling)")
_NORM_PIX_SPACE = _row(
    "norm-pix statistics",
    "per-patch mean/std of the ImageNet-normalised image",
    "per-patch mean/std of the image in [0, 1] pixels (normalisation is inside our models)",
    "every model here takes [0, 1] images so ε and σ are in pixel units",
    "unlikely (a per-channel affine change before the per-patch standardisation)")
_IMAGENET_SUBSET = _row(
    "ImageNet evaluation images (imagenet profile)",
    "the whole 50,000-image validation set (or the paper's stated subset)",
    "evaluation.n_examples = 1000 validation images, a class-stratified subset (each class in turn, seeded "
    "order within a class; data.evaluation_indices): one image per class",
    "attack cost (the first 1000 of the class-sorted folder, used before, held about 20 classes)",
    "yes (1000 images, one per class: ±3 points of binomial noise)")
_OPTIMISER_LOOP = _row(
    "training loop",
    "RandAugment, random erasing 0.25, gradient accumulation to the stated global batch",
    "none of the three (engine: AdamW, warmup + cosine, bf16, MixUp/CutMix/label smoothing, drop path, layer decay)",
    "not implemented in the engine",
    "yes (clean accuracy of fine-tuned ViTs depends on augmentation)")


NIM: tuple[Deviation, ...] = (
    _row("model and schedule (cifar10 profile)",
         "ViT-B/16 on ImageNet-1k, pretraining 800 epochs (batch 4096, blr 1.5e-4, warmup 40), "
         "De³ fine-tuning 100 epochs; the paper has no CIFAR-10 recipe",
         "ViT-Tiny/4 on CIFAR-10 32×32, pretraining 200 epochs (batch 512, warmup 10), fine-tuning 50 epochs",
         "one GPU for a few hours", "yes (absolute numbers; the paper's comparisons may or may not carry over)"),
    _row("fine-tuning recipe",
         "AdamW base lr 1e-3 × 1024/256, layer decay 0.75, MixUp 0.8, CutMix 1.0, label smoothing 0.1, "
         "warmup 5, min lr 1e-6, batch 1024",
         "cifar10: blr 5e-4, no layer decay, no MixUp/CutMix/label smoothing, batch 256; imagenet: MAE's "
         "recipe (blr 5e-4, layer decay 0.65) with MixUp/CutMix/label smoothing",
         "the shared fine-tuning recipe of each profile", "yes (clean accuracy, hence the whole trade-off)"),
    _row("MAE baseline classifier",
         "the official finetune.py can fine-tune the mae framework only with --on_original (its denoising path "
         "calls MAE's forward with an image as mask ratio); which classifier the paper's MAE-De³ row used is not "
         "in the code",
         "mae-de3 fine-tunes the MAE encoder on original images (method standard)",
         "the only runnable reading of the official code", "yes (the MAE-De³ row)"),
    _row("MAE baseline γ",
         "eval_attack.py sweeps the MAE's mask ratio γ = σ/100 over its σ list (0 to 1 in steps of 0.05)",
         "mae-de3's headline defense masks γ = 0.75 (the MAE's pretraining ratio); the sweep's levels v < 100 are "
         "γ = v/100 (the sweep takes the run's degradation from defenses.de3_degradation)",
         "one headline row per model; the sweep shows the rest", "yes (the MAE-De³ trade-off)"),
    _row("σ_test sweep levels",
         "README: σ_test ∈ {-5, 70, 140}/255 (eval_attack.py steps by 5/255 up to 300/255); -5 means no "
         "defense at all (the classifier alone)",
         "0 to 140/255 in steps of 10/255; 0 is De³ without noise (denoise only); the undefended classifier is "
         "the *-ft rows of the robustness suite",
         "15 attack runs per model", "no (coarser grid, same range)"),
    _row("attacks",
         "torchattacks FGSM 4/255, PGD-10 (step 2/255, random start) at 4/255 and AutoAttack, one noise draw per "
         "gradient (no EOT); gray-box = attack the classifier alone",
         "the shared suite: PGD with EOT over evaluation.eot_samples noise draws, Square, APGD, gray-box, at the "
         "profile's ε grid (cifar10 headline 8/255, imagenet 4/255)",
         "a randomized defense must be attacked with EOT (Athalye et al. 2018)",
         "yes (EOT is stronger: our robust accuracy can be lower than the paper's)"),
    _row("evaluation images",
         "all 50,000 ImageNet validation images (5,000 for AutoAttack)",
         "cifar10: 1000 CIFAR-10 test images (torchvision's order; a class-sorted ImageFolder copy gets a "
         "class-stratified subset); imagenet: see 'ImageNet evaluation images'",
         "attack cost", "unlikely on CIFAR-10 (±1.5 points of binomial noise at n = 1000)"),
    _NORM_PIX_SPACE, _MAE_INIT, _MAE_POOL, _OPTIMISER_LOOP, _IMAGENET_SUBSET,
)

MIMIR: tuple[Deviation, ...] = (
    _row("model, patch size and data (cifar10 profile)",
         "CIFAR-10 script: ViT-S with patch 2 at 32×32, pretraining 800 epochs, plus 5M EDM-generated images "
         "(--use_edm) in pretraining and fine-tuning",
         "ViT-Tiny with patch 4, 200 pretraining epochs, CIFAR-10 only (no generated data)",
         "one GPU; the 5M EDM images are not part of the pipeline",
         "yes (the paper's 84.8/53.0 ViT-T numbers also use EDM data)"),
    _row("norm_pix_loss",
         "pretraining with --norm_pix_loss (CIFAR-10 and ImageNet scripts)",
         "cifar10: off (the shared mae / mimir runs predict pixels); imagenet: on",
         "the cifar10 profile shares one MAE run among the papers", "unlikely"),
    _row("HSIC batch",
         "hsic_normalized_cca on each GPU's batch of 128 (4 GPUs × 128)",
         "on the whole batch of one process (cifar10: 512; imagenet: 4096 / 8 GPUs = 512)",
         "one process per GPU; grouping the batch is not implemented",
         "yes (the CCA estimator's range and ridge scale with the batch, so λ = 1e-5 weighs differently)"),
    _row("adaptive attacks",
         "feature PGD and PGD-MI on forward_features (all 1+L tokens before the final norm, dimension (1+L)·D), "
         "100 steps (eval scripts), the batch norm ‖F(x′) − F(x)‖ as one scalar",
         "on the pooled embedding [N, D] after the final norm, feature_steps = mi_steps = 20, HSIC kernel "
         "width σ = 5 per pooled dimension",
         "the classifier exposes embed(); the step count is the profile's",
         "yes (a weaker adaptive attack can overstate robustness)"),
    _row("fine-tuning recipe (cifar10)",
         "AdamW blr 0.05 at global batch 4 × 32 = 128, layer decay 0.65, drop path 0.1, label smoothing 0.1 "
         "(LabelSmoothingCrossEntropy default), min lr 1e-6, 50 epochs, EDM data, PGD-10 8/255 step 2/255",
         "AdamW blr 5e-4 at batch 256, no layer decay, no label smoothing (our PGD-AT attacks integer labels), "
         "50 epochs, CIFAR-10 only, PGD-10 8/255 step 2/255",
         "shared fine-tuning recipe of the profile", "yes"),
    _row("fine-tuning attack mode",
         "PGD inside the training loop with the model in train mode",
         "PGD with the model in eval mode (dropout/drop path off), loss in train mode (the TRADES convention)",
         "deterministic attack", "unlikely"),
    _MAE_INIT, _MAE_POOL, _OPTIMISER_LOOP, _IMAGENET_SUBSET,
)

DMAE: tuple[Deviation, ...] = (
    _row("model and data path (cifar10 profile)",
         "ViT-B/16: DMAE pretrained 1100 epochs on ImageNet, continued 50 epochs on CIFAR-10 (blr 5e-5, batch "
         "512), CIFAR images resized to 224 (bicubic) after the noise",
         "ViT-Tiny/4 pretrained 200 epochs on CIFAR-10 at 32×32, no ImageNet stage",
         "one GPU", "yes (the paper's certified accuracies rely on the ImageNet-pretrained ViT-B)"),
    _row("norm_pix_loss",
         "pretraining with --norm_pix_loss", "cifar10: off; imagenet: on",
         "the cifar10 profile shares one MAE run among the papers", "unlikely"),
    _row("fine-tuning recipe (cifar10)",
         "finetune_cifar10.py: 50 epochs, blr 5e-4 at batch 256, layer decay 0.65, drop path 0.1, label "
         "smoothing 0.1, flip-only augmentation, min lr 1e-6",
         "50 epochs, blr 5e-4 at batch 256, no layer decay, no label smoothing, crop + flip, the engine's min lr",
         "shared fine-tuning recipe of the profile",
         "yes (base-classifier accuracy under noise sets the certified radius)"),
    _row("certification",
         "CIFAR-10: N = 100,000 noise draws on the entire test set (sample_interval 1); ImageNet: every 50th "
         "validation image",
         "N = 10,000 on the first 500 test images (cifar10), which caps the certifiable radius at 0.80 / 1.60 / "
         "3.20 for σ = 0.25 / 0.5 / 1.0",
         "GPU time (12 models)",
         "yes (fewer draws lower every radius; the largest radii of the σ = 0.25 table are out of reach)"),
    _MAE_INIT, _MAE_POOL, _OPTIMISER_LOOP, _IMAGENET_SUBSET,
)

CHEN: tuple[Deviation, ...] = (
    _row("backbone", "ResNet-50v2 (resnetv2.py)", "ResNet-18", "GPU time",
         "yes (absolute accuracies; the P/F comparisons may carry over)"),
    _row("optimisers and schedules",
         "SGD momentum 0.9, lr 0.1, weight decay 3e-4 (ensemble pretraining: lr 1e-3, wd 1e-4), batch 128; "
         "pretext 100-200 epochs with cosine annealing; fine-tuning 100 epochs, lr ÷10 at epochs 60 and 80 "
         "(TRADES scripts 40, 60), 200 warm-up iterations",
         "AdamW (pretext blr 1e-3, fine-tuning blr 5e-4), weight decay 0.05, batch 256, warmup + cosine; pretext "
         "100 epochs, fine-tuning 50",
         "one engine for every paper", "yes (robust accuracy of PGD-AT depends on the schedule)"),
    _row("Selfie",
         "each patch encoded separately by the network up to layer3, attention pooling over the visible "
         "patches' codes, the queried position's embedding added, candidates scored by dot product",
         "the backbone encodes the whole image with removed patches blanked (context) and each candidate patch; "
         "query = W·context + row/column embedding of the removed position (a Selfie-like task)",
         "a much cheaper forward pass", "yes (the Selfie rows test a simplified task)"),
    _row("adversarial fine-tuning attack mode",
         "PGD-10 generated with the model in train mode (BatchNorm uses and updates batch statistics)",
         "PGD-10 with the model in eval mode, the loss in train mode",
         "the TRADES convention of the shared PGD-AT", "yes (BatchNorm statistics differ during the attack)"),
    _row("validation split",
         "pretraining holds out 10% of the training set (valid_size 0.1)",
         "pretraining and fine-tuning use all 50,000 training images",
         "no model selection here", "unlikely"),
    _row("ensemble fine-tuning",
         "model_ensemble.py: one three-branch model (a ResNet-50v2 per pretext pretraining, softmax outputs "
         "averaged) adversarially fine-tuned as a whole",
         "three separately PGD-AT-fine-tuned models, their softmax outputs averaged at test time",
         "reuses the grid's F4 runs", "yes (the ensemble rows)"),
)

DAT: tuple[Deviation, ...] = (
    _row("discrete space",
         "a pretrained ImageNet VQGAN (f = 8, 16,384 codes) downloaded by the official code",
         "a small VQ-VAE trained by the pipeline (cifar10: f = 4, 512 codes, 50 epochs; imagenet: f = 8, 16,384 "
         "codes, 10 epochs), no perceptual/adversarial loss",
         "no pretrained VQGAN at 32×32; the pipeline trains everything it uses",
         "yes (how far Q(x) is from x and how often δ changes a code; see codes_changed in the training log)"),
    _row("model and budget",
         "MAE-ViT-H (and ViT-B, ResNet-50) fine-tuned on ImageNet-1k",
         "ViT-Tiny/4 on CIFAR-10 (cifar10), ViT-B/16 on ImageNet (imagenet), the profile's epochs",
         "GPU time", "yes (absolute mCE and accuracy)"),
    _row("soft targets",
         "MixUp, CutMix and label smoothing kept in DAT runs, with a soft-target attack criterion",
         "DAT runs switch them off (the attack takes integer labels); the imagenet reference mae-ft keeps them",
         "our DAT attack criterion is hard-label cross-entropy",
         "yes (imagenet: DAT vs mae-ft compares different augmentation)"),
    _row("random start and re-quantisation",
         "random start on the L2 sphere with probability 0.8; Q applied as is",
         "random start uniform inside the L2 ball, always; re-quantisation with a straight-through estimator",
         "the shared L2 threat ball; the paper's gradient rule for Q", "unlikely (one step of ε = 0.1)"),
    _row("mCE",
         "ImageNet-C errors normalised per corruption by AlexNet's errors (Hendrycks & Dietterich 2019)",
         "errors normalised by the profile's own standard model (scratch / mae-ft; tables_dat)",
         "AlexNet's published errors are ImageNet-C constants; CIFAR-10-C has none",
         "yes (relative mCE is not comparable with the paper's 31.40)"),
    _row("corruption data",
         "ImageNet-C files; CIFAR-10-C files where CIFAR is used",
         "cifar10: the published CIFAR-10-C files; smoke/test: corruptions generated on the fly "
         "(robust_mim.corruptions; frost synthetic); imagenet: CIFAR-10-C-style corruptions generated at 224, "
         "not ImageNet-C",
         "ImageNet-C is not generated by the pipeline", "yes (imagenet and smoke numbers are not ImageNet-C/CIFAR-10-C)"),
    _row("other benchmarks",
         "Stylized-ImageNet, ImageNet-A/-R/-Sketch, ImageNet-V2",
         "not evaluated", "not part of the pipeline", "no (missing, not different)"),
    _IMAGENET_SUBSET,
)

DEVIATIONS: dict[str, tuple[Deviation, ...]] = {"nim": NIM, "mimir": MIMIR, "dmae": DMAE, "chen": CHEN, "dat": DAT}


def deviations(paper: str) -> tuple[Deviation, ...]:
    """The deviation rows of ``paper`` (nim, mimir, dmae, chen, dat); ConfigError naming the known ones."""
    if paper not in DEVIATIONS:
        raise ConfigError(f"no deviation table for paper '{paper}' (known: {', '.join(DEVIATIONS)})")
    return DEVIATIONS[paper]


def deviation_table(paper: str) -> "pd.DataFrame":
    """One paper's deviations as a DataFrame with columns ``COLUMNS`` (one row per difference)."""
    import pandas as pd

    return pd.DataFrame([asdict(d) for d in deviations(paper)], columns=list(COLUMNS))


def deviation_markdown(paper: str) -> str:
    """One paper's deviations as a GitHub markdown table (``|`` in cells escaped)."""
    header = "| " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in asdict(d).values()) + " |" for d in deviations(paper)]
    return "\n".join([header, rule, *rows])
