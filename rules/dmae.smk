# Paper 3 — DMAE (Wu et al., ICLR 2023): certification rules (certify_smoothed).
# A model trained with Gaussian noise (method.sigma) is certified at that σ, as in Cohen et al. and
# DMAE; any other model listing the paper is certified at every σ of config dmae.sigmas.
DMAE_CERTIFY_SIGMAS = lambda model: (
    [finetune_run(model)["method"]["sigma"]] if "sigma" in finetune_run(model)["method"] else config["dmae"]["sigmas"]
)
# one record per model × σ (σ written with %g: 0.25, 0.5, 1)
NOTEBOOK_EXTRA_INPUTS["03_dmae_certified"] = lambda models: [
    f"{RES}/records/{m}/certify/sigma{s:g}.json" for m in models for s in DMAE_CERTIFY_SIGMAS(m)
]


rule certify_smoothed:
    input:
        weights=lambda wc: finetune_weights(wc.model),
    output:
        f"{RES}/records/{{model}}/certify/sigma{{sigma,[0-9.]+}}.json",
    log:
        f"{RES}/logs/certify_smoothed/{{model}}-sigma{{sigma}}.log",
    benchmark:
        f"{RES}/benchmarks/certify_smoothed/{{model}}-sigma{{sigma}}.tsv"
    params:
        spec=lambda wc: job_spec(
            run=finetune_run(wc.model),
            dmae=config["dmae"],
            pretrain_objective=(
                pretrain_run(finetune_run(wc.model)["init"])["objective"]["name"]
                if finetune_run(wc.model).get("init")
                else None
            ),
        ),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli certify --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--weights {input.weights:q} --model-id {wildcards.model:q} --sigma {wildcards.sigma:q} --out {output:q}"
