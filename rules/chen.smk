# Paper 4 — Chen et al. (CVPR 2020): pretext pretraining (pretrain_pretext) and the paper's TA / ATA
# evaluation of every chen model and softmax ensemble (attack_chen_pgd). Fine-tuning (F1–F4) is the
# shared finetune_classifier rule: runs set `init` to a chen.pretrain run and `frozen_blocks` for F1/F2.
CHEN = config["chen"]
CHEN_PRETRAIN_RUNS = sorted(CHEN["pretrain"]["runs"])
CHEN_ENSEMBLES = sorted(CHEN["ensembles"])
CHEN_EVAL_IDS = models_of("chen") + CHEN_ENSEMBLES
CHEN_PRETEXT_KEYS = ("jigsaw_grid", "num_permutations", "permutation_seed", "selfie_patch", "selfie_masked",
                     "selfie_shared_encoder")


wildcard_constraints:
    pretext="|".join(CHEN_PRETRAIN_RUNS) or "__none__",
    chen_model="|".join(CHEN_EVAL_IDS) or "__none__",


# a pretext run: chen.pretrain's shared keys, the run's own, and chen.backbone
chen_pretrain_run = lambda run: {**resolve_run(CHEN["pretrain"], run), "backbone": CHEN["backbone"]}
# objective of the run a fine-tuning run starts from (None: P1, from scratch)
chen_init_objective = lambda run: (
    chen_pretrain_run(run["init"])["objective"] if run.get("init") in CHEN_PRETRAIN_RUNS
    else pretrain_run(run["init"])["objective"] if run.get("init") in PRETRAIN_RUNS else None
)
# finetune model ids behind an evaluation id: an ensemble's members, or the model itself
chen_members = lambda eval_id: CHEN["ensembles"].get(eval_id, [eval_id])
chen_member_runs = lambda eval_id: [
    {k: v for k, v in finetune_run(m).items() if k not in RESOURCE_KEYS} for m in chen_members(eval_id)
]
chen_pgd_record = lambda eval_id: f"{RES}/records/{eval_id}/chen/pgd.json"
chen_pretext_record = lambda run: f"{RES}/records/{run}/pretext/pretext.json"
NOTEBOOK_EXTRA_INPUTS["04_adv_ss_pretraining"] = lambda models: (
    [chen_pgd_record(i) for i in CHEN_EVAL_IDS] + [chen_pretext_record(r) for r in CHEN_PRETRAIN_RUNS]
)


rule pretrain_pretext:
    output:
        weights=f"{RES}/pretrain/{{pretext}}/model.safetensors",
        record=f"{RES}/records/{{pretext}}/pretext/pretext.json",
    log:
        f"{RES}/logs/pretrain_pretext/{{pretext}}.log",
    benchmark:
        f"{RES}/benchmarks/pretrain_pretext/{{pretext}}.tsv"
    params:
        spec=lambda wc: job_spec(run=chen_pretrain_run(wc.pretext), pretext={k: CHEN[k] for k in CHEN_PRETEXT_KEYS},
                                 chen_eval=CHEN["eval"]),
        run_dir=lambda wc: f"{RES}/pretrain/{wc.pretext}",
        launcher=lambda wc, resources: launcher(resources.gpu),
    threads: THREADS
    resources:
        gpu=lambda wc: chen_pretrain_run(wc.pretext)["gpus"],
        runtime=lambda wc: chen_pretrain_run(wc.pretext)["runtime_min"],
        mem_mb=lambda wc: chen_pretrain_run(wc.pretext)["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m robust_mim.cli pretrain-pretext --spec {params.spec:q} --threads {threads} "
        "--log-file {log:q} --gpus {resources.gpu} --out {output.weights:q} --record {output.record:q} "
        "--run-dir {params.run_dir:q}"


rule attack_chen_pgd:
    input:
        weights=lambda wc: [finetune_weights(m) for m in chen_members(wc.chen_model)],
    output:
        f"{RES}/records/{{chen_model}}/chen/pgd.json",
    log:
        f"{RES}/logs/attack_chen_pgd/{{chen_model}}.log",
    benchmark:
        f"{RES}/benchmarks/attack_chen_pgd/{{chen_model}}.tsv"
    params:
        spec=lambda wc: job_spec(members=chen_member_runs(wc.chen_model), chen_eval=CHEN["eval"],
                                 pretrain_objectives=[chen_init_objective(r) for r in chen_member_runs(wc.chen_model)]),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli pgd-eval --spec {params.spec:q} --threads {threads} --log {log:q} "
        "--weights {input.weights:q} --model-id {wildcards.chen_model:q} --out {output:q}"
