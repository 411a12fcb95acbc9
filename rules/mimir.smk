# Paper 2 — MIMIR (Xu et al.): rules beyond the shared stages.
# Every model listing `mimir` in `papers` gets attack_adaptive (PGD-k, feature-space PGD, PGD-MI; config
# `mimir`) besides the shared attack_eval; notebook 02 also reads the pretraining runs' metrics.jsonl
# (per-epoch reconstruction and HSIC terms) of the encoders those models start from.


def mimir_init_objective(model):
    """Objective of the pretraining run a model's encoder starts from (None: from scratch)."""
    init = finetune_run(model).get("init")
    return pretrain_run(init)["objective"] if init else None


def mimir_settings():
    """Config `mimir` with n_examples resolved (null: the shared suite's evaluation.n_examples)."""
    n = config["mimir"]["n_examples"] or config["evaluation"]["n_examples"]
    return {**config["mimir"], "n_examples": n}


def mimir_adaptive_records(model):
    return f"{RES}/records/{model}/mimir-adaptive"


def mimir_pretrain_metrics(models):
    """metrics.jsonl of every pretraining run the given models are initialised from."""
    runs = sorted({finetune_run(m)["init"] for m in models if finetune_run(m).get("init")})
    return [f"{RES}/pretrain/{r}/metrics.jsonl" for r in runs]


NOTEBOOK_EXTRA_INPUTS["02_mimir"] = lambda models: [mimir_adaptive_records(m) for m in models] + mimir_pretrain_metrics(
    models
)


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
            run=finetune_run(wc.model),
            mimir=mimir_settings(),
            pretrain_objective=mimir_init_objective(wc.model),
        ),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli attack-adaptive --spec {params.spec:q} --threads {threads} --log {log} "
        "--weights {input.weights} --model-id {wildcards.model} --out-dir {output}"
