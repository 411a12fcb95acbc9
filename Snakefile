"""robust_mim — the experiment graph.

    snakemake --cores 8 all                                  # default profile (smoke)
    snakemake --cores 8 all --configfile config/cifar10.yaml # another profile

Stages: pretrain_mim -> finetune_classifier -> attack_eval -> notebook_run (figures, tables).
Each paper's own rules (rules/<key>.smk) are included by looping over the registry robust_mim.papers.PAPERS.
Parameters live in config/<profile>.yaml (validated against config/schema.yaml); rules turn
them into job specs; every output is under results/<profile>/ or figures/<profile>/.
"""
from snakemake.utils import min_version

from robust_mim.papers import PAPERS

min_version("8.0")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/notebooks.smk"


# one rule file per registered paper (robust_mim/papers/<key>/ -> rules/<key>.smk), in the papers' order
for paper in PAPERS.values():

    include: paper.rules


include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True


# one target per paper: `snakemake --cores 2 mimir --configfile config/cifar10-cpu.yaml` runs that paper's chain
# alone (its pretrainings, fine-tunings, evaluations and executed notebook; shared pretrainings once)
for paper in PAPERS.values():

    rule:
        name:
            paper.key
        input:
            f"{RES}/notebooks/{paper.notebook}.ipynb",
            f"{RES}/html/{paper.notebook}.html",
