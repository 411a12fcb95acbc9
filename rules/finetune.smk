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
        flags=lambda wc, input: optional_flags(input, ["init", "denoiser"]),
    threads: THREADS
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli finetune --spec {params.spec:q} --threads {threads} --log {log} "
        "--out {output.weights} --run-dir {params.run_dir} {params.flags}"
