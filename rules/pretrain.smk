rule pretrain_mim:
    output:
        weights=f"{RES}/pretrain/{{run}}/model.safetensors",
    log:
        f"{RES}/logs/pretrain_mim/{{run}}.log",
    benchmark:
        f"{RES}/benchmarks/pretrain_mim/{{run}}.tsv"
    params:
        spec=lambda wc: job_spec(run=pretrain_run(wc.run)),
        run_dir=lambda wc: f"{RES}/pretrain/{wc.run}",
    threads: THREADS
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli pretrain --spec {params.spec:q} --threads {threads} --log {log} "
        "--out {output.weights} --run-dir {params.run_dir}"
