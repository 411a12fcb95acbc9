"""robust_mim — the experiment graph.

    snakemake --cores 8 all                                  # default profile (smoke)
    snakemake --cores 8 all --configfile config/cifar10.yaml # another profile

Stages: pretrain_mim -> finetune_classifier -> attack_eval -> notebook_run (figures, tables).
Parameters live in config/<profile>.yaml (validated against config/schema.yaml); rules turn
them into job specs; every output is under results/<profile>/ or figures/<profile>/.
"""
from snakemake.utils import min_version

min_version("8.0")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/notebooks.smk"
include: "rules/nim.smk"
include: "rules/mimir.smk"
include: "rules/dmae.smk"
include: "rules/chen.smk"
include: "rules/dat_common.smk"
include: "rules/dat.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
