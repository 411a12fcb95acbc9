"""Paper 1 — NIM / De³ (You et al., NeurIPS 2023): noisy image modeling pretraining and the De³ defense.

Its folder holds what only this paper needs; `PAPER` registers it (robust_mim.papers).
"""
from robust_mim.papers import Paper

PAPER = Paper(
    key="nim",
    title="NIM / De³ (You et al., NeurIPS 2023)",
    number=1,
    short="NIM - De3",
    notebook="01_nim_de3",
    commands={
        "sigma-sweep": "Clean and PGD-EOT accuracy of De³ as the test-time noise σ_test varies (one record).",
    },
    objectives=('objective',),
)
