# Paper 2 — MIMIR (Xu et al.): rules beyond the shared stages.
# Every model listing `mimir` in `papers` gets attack_adaptive (PGD-k, feature-space PGD, PGD-MI; config
# `mimir`) besides the shared attack_eval; notebook 02 also reads the pretraining runs' metrics.jsonl
# (per-epoch reconstruction and HSIC terms) of the encoders those models start from.

# objective of the pretraining run a model's encoder starts from (None: from scratch)
MIMIR_INIT_OBJECTIVE = lambda model: (
    pretrain_run(finetune_run(model)["init"])["objective"] if finetune_run(model).get("init") else None
)
# config `mimir` with n_examples resolved (null: the shared suite's evaluation.n_examples, the same images)
MIMIR_SETTINGS = {
    **config["mimir"],
    "n_examples": config["mimir"]["n_examples"] or config["evaluation"]["n_examples"],
}
# notebook 02: every model's adaptive records + metrics.jsonl of the pretraining runs the models start from
NOTEBOOK_EXTRA_INPUTS["02_mimir"] = lambda models: [f"{RES}/records/{m}/mimir-adaptive" for m in models] + [
    f"{RES}/pretrain/{r}/metrics.jsonl"
    for r in sorted({finetune_run(m)["init"] for m in models if finetune_run(m).get("init")})
]


rule attack_adaptive:
    input:
        weights=lambda wc: finetune_weights(wc.model),
    output:
        directory(f"{RES}/records/{{model}}/mimir-adaptive"),
    log:
        f"{RES}/logs/attack_adaptive/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/attack_adaptive/{{model}}.tsv"
    params:
        spec=lambda wc: job_spec(
            run=finetune_run(wc.model), mimir=MIMIR_SETTINGS, pretrain_objective=MIMIR_INIT_OBJECTIVE(wc.model)
        ),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli attack-adaptive --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--weights {input.weights:q} --model-id {wildcards.model:q} --out-dir {output:q}"
