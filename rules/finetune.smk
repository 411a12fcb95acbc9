rule finetune_classifier:
    input:
        unpack(finetune_inputs),
    output:
        weights=f"{RES}/finetune/{{model}}/model.safetensors",
    log:
        f"{RES}/logs/finetune_classifier/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/finetune_classifier/{{model}}.tsv"
    params:
        spec=lambda wc: job_spec(run=finetune_run(wc.model)),
        run_dir=lambda wc: f"{RES}/finetune/{wc.model}",
        flags=lambda wc, input: optional_flags(input, list(AUX_WEIGHTS)),
        launcher=lambda wc, resources: launcher(resources.gpu),
    threads: THREADS
    resources:
        gpu=lambda wc: finetune_run(wc.model)["gpus"],
        runtime=lambda wc: finetune_run(wc.model)["runtime_min"],
        mem_mb=lambda wc: finetune_run(wc.model)["mem_mb"],
        cpus_per_task=lambda wc: THREADS * max(1, finetune_run(wc.model)["gpus"]),
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m robust_mim.cli finetune --spec {params.spec:q} --threads {threads} --log-file {log:q} "
        "--gpus {resources.gpu} --out {output.weights:q} --run-dir {params.run_dir:q} {params.flags}"
