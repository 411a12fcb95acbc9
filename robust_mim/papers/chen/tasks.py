"""The pretext tasks of Chen et al. (CVPR 2020) by name, and the label records and tables give each (torch-free).

Our Selfie is a simplified task (the whole masked image encoded at once, no attention pooling over
separately encoded patches: `robust_mim.papers.chen.deviations`), so every record, table and claim
calls it ``selfie-like``; configuration files keep the short name ``selfie``.
"""
from __future__ import annotations

PRETEXT_TASKS = ("rotation", "jigsaw", "selfie")
TASK_LABELS = {"rotation": "rotation", "jigsaw": "jigsaw", "selfie": "selfie-like"}


def task_label(task: str) -> str:
    """The label records and tables show for a pretext task (``selfie`` → ``selfie-like``; others unchanged)."""
    return TASK_LABELS.get(task, task)
