rule pretrain_mim:
    output:
        weights=f"{RES}/pretrain/{{run}}/model.safetensors",
        metrics=f"{RES}/pretrain/{{run}}/metrics.jsonl",
    log:
        f"{RES}/logs/pretrain_mim/{{run}}.log",
    benchmark:
        f"{RES}/benchmarks/pretrain_mim/{{run}}.tsv"
    params:
        spec=lambda wc: job_spec(run=pretrain_run(wc.run)),
        run_dir=lambda wc: f"{RES}/pretrain/{wc.run}",
        launcher=lambda wc, resources: launcher(resources.gpu),
    threads: THREADS
    resources:
        gpu=lambda wc: pretrain_run(wc.run)["gpus"],
        runtime=lambda wc: pretrain_run(wc.run)["runtime_min"],
        mem_mb=lambda wc: pretrain_run(wc.run)["mem_mb"],
        cpus_per_task=lambda wc: THREADS * max(1, pretrain_run(wc.run)["gpus"]),
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m robust_mim.cli pretrain --spec {params.spec:q} --threads {threads} --log-file {log:q} "
        "--gpus {resources.gpu} --out {output.weights:q} --run-dir {params.run_dir:q}"
