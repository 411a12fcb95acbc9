"""Attacks: the core gradient attacks and the library adapters, registered in one `ATTACKS` registry.

- `robust_mim.attacks.core`: FGSM, PGD (L∞/L2), EOT and BPDA, the threat ball, the `ATTACKS` registry.
- `robust_mim.attacks.art`: adapters over the Adversarial Robustness Toolbox (APGD, Square, FAB...).
- `robust_mim.attacks.autoattack`: the official AutoAttack (pyautoattack), resumable.

Importing any of them imports this package first, which registers the adapters' attacks.
"""
from robust_mim.attacks import art, autoattack  # noqa: F401  (register their attacks in core.ATTACKS)
