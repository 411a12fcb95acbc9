# Paper 4 — Chen et al. (CVPR 2020): pretext pretraining (pretrain_pretext) and the paper's TA / ATA
# evaluation of every chen model and softmax ensemble (attack_chen_pgd). Fine-tuning (F1–F4) is the
# shared finetune_classifier rule: runs set `init` to a chen.pretrain run and `frozen_blocks` for F1/F2.
CHEN = config["chen"]
CHEN_PRETRAIN_RUNS = sorted(CHEN["pretrain"]["runs"])
CHEN_ENSEMBLES = sorted(CHEN["ensembles"])
CHEN_EVAL_IDS = models_of("chen") + CHEN_ENSEMBLES
CHEN_PRETEXT_KEYS = ("jigsaw_grid", "num_permutations", "permutation_seed", "selfie_patch", "selfie_masked",
                     "selfie_shared_encoder")


def chen_config_errors():
    """One line per inconsistency: colliding ids, unknown ensemble members, backbone mismatches."""
    errors = [f"chen.pretrain run '{r}' is also a pretrain.runs id" for r in CHEN_PRETRAIN_RUNS if r in PRETRAIN_RUNS]
    errors += [f"chen.ensembles id '{e}' is also a finetune model id" for e in CHEN_ENSEMBLES if e in MODELS]
    errors += [f"chen.ensembles.{e} names unknown finetune model '{m}'"
               for e in CHEN_ENSEMBLES for m in CHEN["ensembles"][e] if m not in MODELS]
    errors += [f"finetune.runs.{m}.backbone must be chen.backbone ({CHEN['backbone']}) to load init '{finetune_run(m)['init']}'"
               for m in MODELS if finetune_run(m).get("init") in CHEN_PRETRAIN_RUNS
               and finetune_run(m).get("backbone") != CHEN["backbone"]]
    return errors


CHEN_CONFIG_ERRORS = chen_config_errors()
if CHEN_CONFIG_ERRORS:
    raise SystemExit(f"robust_mim: config error: {CHEN_CONFIG_ERRORS[0]}")


wildcard_constraints:
    pretext="|".join(CHEN_PRETRAIN_RUNS) or "__none__",
    chen_model="|".join(CHEN_EVAL_IDS) or "__none__",


def chen_pretrain_run(run):
    """A pretext run's settings: chen.pretrain's shared keys, the run's own, and chen.backbone."""
    return {**resolve_run(CHEN["pretrain"], run), "backbone": CHEN["backbone"]}


def chen_init_objective(run):
    """Objective of the pretraining run a fine-tuning run starts from (None: P1, from scratch)."""
    init = run.get("init")
    if init in CHEN_PRETRAIN_RUNS:
        return chen_pretrain_run(init)["objective"]
    return pretrain_run(init)["objective"] if init in PRETRAIN_RUNS else None


def chen_members(eval_id):
    """Finetune model ids behind an evaluation id: the ensemble's members, or the model itself."""
    return CHEN["ensembles"].get(eval_id, [eval_id])


def chen_pgd_spec(eval_id):
    runs = [{k: v for k, v in finetune_run(m).items() if k not in RESOURCE_KEYS} for m in chen_members(eval_id)]
    return job_spec(members=runs, pretrain_objectives=[chen_init_objective(r) for r in runs], chen_eval=CHEN["eval"])


def chen_pgd_record(eval_id):
    return f"{RES}/records/{eval_id}/chen/pgd.json"


def chen_pretext_record(run):
    return f"{RES}/records/{run}/pretext/pretext.json"


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
        "{params.launcher} -m robust_mim.cli pretrain-pretext --spec {params.spec:q} --threads {threads} --log {log} "
        "--gpus {resources.gpu} --out {output.weights} --record {output.record} --run-dir {params.run_dir}"


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
        spec=lambda wc: chen_pgd_spec(wc.chen_model),
    threads: THREADS
    resources:
        gpu=config["evaluation"]["gpus"],
        runtime=config["evaluation"]["runtime_min"],
        mem_mb=config["evaluation"]["mem_mb"],
    conda:
        "../environment.yml"
    shell:
        "python -m robust_mim.cli pgd-eval --spec {params.spec:q} --threads {threads} --log {log} "
        "--weights {input.weights} --model-id {wildcards.chen_model} --out {output}"
