# Paper 1 — NIM / De³ (You et al., NeurIPS 2023): rules beyond the shared pretrain/finetune/attack stages.
# Pretraining (objective nim), De³ fine-tuning on denoised images (method denoised, `denoiser`) and the
# shared robustness suite of De³ models (defense de3: EOT and gray-box added) run through the shared
# rules. This file adds the σ_test trade-off, the paper's key figure, for every nim model with De³.


# models of paper nim whose defense is De³: each gets a σ_test sweep (one record)
NOTEBOOK_EXTRA_INPUTS["01_nim_de3"] = lambda models: [
    f"{RES}/records/{m}/sigma_sweep/sigma_sweep.json"
    for m in models
    if (finetune_run(m).get("defense") or {}).get("name") == "de3"
]


rule attack_sigma_sweep:
    input:
        weights=lambda wc: finetune_weights(wc.model),
        denoiser=lambda wc: pretrain_weights(finetune_run(wc.model)["denoiser"]),
    output:
        f"{RES}/records/{{model}}/sigma_sweep/sigma_sweep.json",
    log:
        f"{RES}/logs/attack_sigma_sweep/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/attack_sigma_sweep/{{model}}.tsv"
    params:
        spec=lambda wc: job_spec(
            run=finetune_run(wc.model),
            evaluation=config["evaluation"],
            nim=config["nim"],
            denoiser_objective=pretrain_run(finetune_run(wc.model)["denoiser"])["objective"],
        ),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli sigma-sweep --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--weights {input.weights:q} --denoiser {input.denoiser:q} --model-id {wildcards.model:q} --out {output:q}"
