"""What we compute differently from each paper's official code: the table's shape and rendering.

Each paper keeps its rows once, in its folder (``robust_mim/papers/<key>/deviations.py``, ``ROWS``),
built from `row` and the rows shared by several papers defined here (``MAE_INIT`` ...).

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
from robust_mim.papers import PAPERS

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


def row(aspect: str, official: str, ours: str, why: str, can_change_result: str) -> Deviation:
    return Deviation(aspect, official, ours, why, can_change_result)


# Rows shared by the three MAE-based papers (NIM, MIMIR, DMAE).
MAE_INIT = row(
    "MAE weight initialisation",
    "xavier_uniform for every Linear and the patch projection, LayerNorm (1, 0) (models_mae.initialize_weights)",
    "timm's ViT initialisation for the encoder; PyTorch defaults for the decoder's Linear layers",
    "the encoder is the timm ViT the classifiers load without renaming",
    "unlikely (initialisation only; long pretraining)")
MAE_POOL = row(
    "classifier pooling",
    "MAE fine-tuning ViT: mean of patch tokens, then a fresh fc_norm (the encoder's final norm removed)",
    "final norm on every token, then the mean of patch tokens (fc_norm off), so all pretrained weights load",
    "one backbone for the MAE encoder and the classifier, loaded strictly",
    "unlikely (a LayerNorm before vs after pooling)")
NORM_PIX_SPACE = row(
    "norm-pix statistics",
    "per-patch mean/std of the ImageNet-normalised image",
    "per-patch mean/std of the image in [0, 1] pixels (normalisation is inside our models)",
    "every model here takes [0, 1] images so ε and σ are in pixel units",
    "unlikely (a per-channel affine change before the per-patch standardisation)")
IMAGENET_SUBSET = row(
    "ImageNet evaluation images (imagenet profile)",
    "the whole 50,000-image validation set (or the paper's stated subset)",
    "evaluation.n_examples = 1000 validation images, a class-stratified subset (each class in turn, seeded "
    "order within a class; data.evaluation_indices): one image per class",
    "attack cost (the first 1000 of the class-sorted folder, used before, held about 20 classes)",
    "yes (1000 images, one per class: ±3 points of binomial noise)")
def cpu_budget(paper_specific: str, can_change_result: str) -> Deviation:
    """The cifar10-cpu profile's recipe for one paper (fixed in config/cifar10-cpu.yaml before its reference run):
    what every paper shares there, then ``paper_specific``."""
    return row(
        "cifar10-cpu profile (the committed reference records)",
        "the paper's model and schedule on GPUs (see the rows above and the paper's scale in claims.md)",
        "real CIFAR-10 (the lossy JPEG copy, about 30 dB PSNR, all 50,000 training images) at 32×32, "
        "vit_micro_patch4_32 (4 blocks, width 64), MAE-family pretraining 10 epochs at batch 256, fine-tuning 3 "
        "epochs at batch 128 with the shared AdamW recipe (blr 1e-3, 0.5 warmup epochs), adversarial training with "
        "PGD-2 of step 5/255 at 8/255; evaluation on 1,000 test images (clean and corruptions on 10,000); "
        + paper_specific,
        "one recipe per paper fixed before the run so each paper's chain fits 60 minutes on a 2-core CPU",
        can_change_result)


OPTIMISER_LOOP = row(
    "training loop",
    "RandAugment, random erasing 0.25, gradient accumulation to the stated global batch",
    "none of the three (engine: AdamW or SGD, warmup + cosine or step decay, bf16, MixUp/CutMix/label smoothing, drop path, layer decay)",
    "not implemented in the engine",
    "yes (clean accuracy of fine-tuned ViTs depends on augmentation)")




def deviations(paper: str) -> tuple[Deviation, ...]:
    """The deviation rows of a registered paper (``robust_mim/papers/<paper>/deviations.py``, ``ROWS``);
    one ConfigError line naming the known papers otherwise."""
    return PAPERS[paper_key(paper)].module("deviations").ROWS


def paper_key(paper: str) -> str:
    if paper not in PAPERS:
        raise ConfigError(f"no deviation table for paper '{paper}' (known: {', '.join(PAPERS)})")
    return paper


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
