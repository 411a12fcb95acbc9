"""Paper 5 — DAT (Mao et al., NeurIPS 2022): discrete adversarial training through a VQ autoencoder.

Its folder holds what only this paper needs; `PAPER` registers it (robust_mim.papers).
"""
from robust_mim.papers import Paper

PAPER = Paper(
    key="dat",
    title="DAT (Mao et al., NeurIPS 2022)",
    number=5,
    short="DAT",
    notebook="05_dat",
    commands={
        "train-vq": "Train DAT's VQ autoencoder; record test PSNR / codebook usage; save a reconstruction grid.",
        "corruption-eval": "Error of one classifier on 15 corruptions × the configured severities (one record).",
    },
    run_sections={"dat.vq": "vq"},
    checks=True,
    objectives=('objective',),
)
