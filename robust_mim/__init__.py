"""robust_mim: adversarial robustness from masked-image-modeling pretraining, re-derived.

A thin library behind numbered notebooks and a Snakemake pipeline; see README.md.
"""
__version__ = "0.1.0"
