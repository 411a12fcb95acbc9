# Paper 5 — DAT (Mao et al., NeurIPS 2022): VQ autoencoder, DAT training, corruption benchmark.
# Helper functions live in rules/dat_common.smk (included here).
include: "dat_common.smk"


rule train_vq:
    output:
        weights=f"{RES}/dat/vq/{{vq}}/model.safetensors",
        metrics=f"{RES}/dat/vq/{{vq}}/metrics.jsonl",
        record=f"{RES}/records/{{vq}}/vq/vq.json",
        figure=f"{RES}/dat/vq/{{vq}}/reconstructions.png",
    log:
        f"{RES}/logs/train_vq/{{vq}}.log",
    benchmark:
        f"{RES}/benchmarks/train_vq/{{vq}}.tsv"
    params:
        spec=lambda wc: job_spec(run=vq_run(wc.vq)),
        run_dir=lambda wc: f"{RES}/dat/vq/{wc.vq}",
    threads: THREADS
    resources:
        gpu=lambda wc: min(1, vq_run(wc.vq)["gpus"]),
        runtime=lambda wc: vq_run(wc.vq)["runtime_min"],
        mem_mb=lambda wc: vq_run(wc.vq)["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli train-vq --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--out {output.weights:q} --run-dir {params.run_dir:q} --record {output.record:q} --figure {output.figure:q}"


rule corruption_eval:
    input:
        unpack(lambda wc: {"weights": finetune_weights(wc.model), **finetune_inputs(wc)}),
    output:
        f"{RES}/records/{{model}}/corruption/corruption.json",
    log:
        f"{RES}/logs/corruption_eval/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/corruption_eval/{{model}}.tsv"
    params:
        spec=lambda wc: job_spec(run=finetune_run(wc.model), dat={"corruption": DAT["corruption"]}),
        flags=lambda wc, input: optional_flags(input, ["denoiser", "vq"]),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli corruption-eval --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--weights {input.weights:q} --model-id {wildcards.model:q} --out {output:q} {params.flags}"
