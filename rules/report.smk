# Leaderboard, claims table and HTML report: a RobustBench-style model card per trained classifier
# (report_model_cards), the claims table generated from records (report_claims -> results/<profile>/claims.md)
# and every executed notebook as HTML (report_notebook_html -> results/<profile>/html/). Outputs are marked
# with report(..., category=<paper>) so `snakemake --report report.html` groups figures and tables by paper.

# paper key (NOTEBOOK_PAPER) -> report category
REPORT_CATEGORY = {None: f"{len(PAPERS) + 1} overview and leaderboard", **{p.key: p.category for p in PAPERS.values()}}
# sections of runs a classifier can start from: pretrain.runs and paper sections with runs (chen.pretrain, dat.vq)
REPORT_UPSTREAM_SECTIONS = [config["pretrain"]] + [
    sub for k, v in config.items() if k not in ("pretrain", "finetune") and isinstance(v, dict)
    for sub in v.values() if isinstance(sub, dict) and isinstance(sub.get("runs"), dict)
]


# report category of a notebook's outputs
report_category = lambda notebook: REPORT_CATEGORY.get(NOTEBOOK_PAPER.get(notebook), notebook)
# every record of the profile: the shared suite of each model and each configured paper notebook's inputs
report_record_inputs = lambda: sorted(set(robustness_records(MODELS)) | {
    p for nb in config["notebooks"] if nb != "06_leaderboard"
    for p in NOTEBOOK_EXTRA_INPUTS.get(nb, lambda ms: [])(models_of(NOTEBOOK_PAPER.get(nb)))
})
# fine-tuning settings of a model, without scheduling keys
report_run = lambda model: {k: v for k, v in finetune_run(model).items() if k not in RESOURCE_KEYS}
# a model's fine-tuning settings and those of each run it starts from (init, denoiser, vq, ...)
report_model_settings = lambda model: {
    "run": report_run(model),
    "upstream": {
        value: {k: v for k, v in resolve_run(section, value).items() if k not in RESOURCE_KEYS}
        for value in report_run(model).values() if isinstance(value, str)
        for section in REPORT_UPSTREAM_SECTIONS if value in section["runs"]
    },
}


# notebook 06 reads every record and the model cards (training settings and cost)
NOTEBOOK_EXTRA_INPUTS["06_leaderboard"] = lambda models: report_record_inputs() + [f"{RES}/model_cards"]
REPORT_TARGETS += [f"{RES}/claims.md"] + [f"{RES}/html/{nb}.html" for nb in config["notebooks"]]


rule report_model_cards:
    input:
        records=report_record_inputs(),
        weights=[finetune_weights(m) for m in MODELS],
    output:
        directory(f"{RES}/model_cards"),
    log:
        f"{RES}/logs/report_model_cards/model_cards.log",
    benchmark:
        f"{RES}/benchmarks/report_model_cards/model_cards.tsv"
    params:
        spec=job_spec(models={m: report_model_settings(m) for m in MODELS},
                      headline_eps_255=config["evaluation"]["headline_eps_255"]),
        results=lambda wc, output: str(Path(output[0]).parent),
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli model-cards --spec {params.spec:q} --threads 1 --log {log:q} "
        "--results-dir {params.results:q} --out-dir {output:q}"


rule report_claims:
    input:
        records=report_record_inputs(),
    output:
        markdown=f"{RES}/claims.md",
        html=report(f"{RES}/claims.html", caption="../report/claims.rst", category="0 claims"),
    log:
        f"{RES}/logs/report_claims/claims.log",
    benchmark:
        f"{RES}/benchmarks/report_claims/claims.tsv"
    params:
        spec=job_spec(notebooks=config["notebooks"]),
        root=lambda wc, output: str(Path(output.markdown).parent.parent),
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli claims --spec {params.spec:q} --threads 1 --log {log:q} "
        "--results-root {params.root:q} --out {output.markdown:q} --html {output.html:q}"


rule report_notebook_html:
    input:
        f"{RES}/notebooks/{{notebook}}.ipynb",
    output:
        report(f"{RES}/html/{{notebook}}.html", caption="../report/notebook.rst",
               category=lambda wc: report_category(wc.notebook), subcategory="executed notebooks"),
    log:
        f"{RES}/logs/report_notebook_html/{{notebook}}.log",
    benchmark:
        f"{RES}/benchmarks/report_notebook_html/{{notebook}}.tsv"
    params:
        outdir=lambda wc, output: str(Path(output[0]).parent),
    conda:
        "../environment.yml"
    shell:
        "python -m nbconvert --to html --output-dir {params.outdir:q} --output {wildcards.notebook:q} "
        "{input:q} > {log:q} 2>&1"
