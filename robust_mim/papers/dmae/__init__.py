"""Paper 3 — DMAE (Wu et al., ICLR 2023): denoising MAE pretraining and Gaussian-smoothing certification.

Its folder holds what only this paper needs; `PAPER` registers it (robust_mim.papers).
"""
from robust_mim.papers import Paper

PAPER = Paper(
    key="dmae",
    title="DMAE (Wu et al., ICLR 2023)",
    number=3,
    short="DMAE",
    notebook="03_dmae_certified",
    commands={
        "certify": "Certify a Gaussian-smoothed classifier (Cohen et al. 2019 CERTIFY) and check it with PGD-EOT.",
    },
    objectives=('objective',),
)
