"""Paper 2 — MIMIR (Xu et al.): adversarial MAE pretraining with a mutual-information penalty, then PGD-AT.

Its folder holds what only this paper needs; `PAPER` registers it (robust_mim.papers).
"""
from robust_mim.papers import Paper

PAPER = Paper(
    key="mimir",
    title="MIMIR (Xu et al.)",
    number=2,
    short="MIMIR",
    notebook="02_mimir",
    commands={
        "attack-adaptive": "MIMIR's PGD-k, feature-space PGD and PGD-MI against one classifier; one record per attack.",
    },
    objectives=('methods',),
)
