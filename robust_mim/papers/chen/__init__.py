"""Paper 4 — Chen et al. (CVPR 2020): adversarial self-supervised pretext pretraining, then adversarial fine-tuning.

Its folder holds what only this paper needs; `PAPER` registers it (robust_mim.papers).
"""
from robust_mim.papers import Paper

PAPER = Paper(
    key="chen",
    title="Chen et al. (CVPR 2020)",
    number=4,
    short="Chen et al. 2020",
    notebook="04_adv_ss_pretraining",
    commands={
        "pretrain-pretext": "Pretrain a backbone on pretext tasks (rotation, jigsaw, Selfie-like), standard or adversarial.",
        "pgd-eval": "TA and PGD ATA of one classifier or a softmax ensemble (Chen et al.'s protocol); one record.",
    },
    run_sections={"chen.pretrain": "init"},
    checks=True,
    objectives=(),
)
