rule attack_eval:
    input:
        unpack(lambda wc: {"weights": finetune_weights(wc.model), **finetune_inputs(wc)}),
    output:
        directory(f"{RES}/records/{{model}}/robustness"),
    log:
        f"{RES}/logs/attack_eval/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/attack_eval/{{model}}.tsv"
    params:
        spec=lambda wc: job_spec(run=finetune_run(wc.model), evaluation=config["evaluation"]),
        flags=lambda wc, input: optional_flags(input, ["denoiser", "vq"]),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli attack --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--weights {input.weights:q} --model-id {wildcards.model:q} --out-dir {output:q} {params.flags}"
