# Paper 5 — DAT: helpers for rules/dat.smk (config slices, paths, notebook inputs).
# Paper 5 — DAT (Mao et al., NeurIPS 2022): VQ autoencoder, DAT training, corruption benchmark.
# train_vq trains each dat.vq run (DAT's discrete image space Q); a finetune run names one in `vq` (method dat,
# or defense vq) and the shared finetune_classifier rule passes it as --vq (AUX_WEIGHTS). Every model listing
# paper dat gets corruption_eval (15 corruptions x the configured severities, one record) besides attack_eval.
DAT = config["dat"]
VQ_RUNS = sorted(DAT["vq"]["runs"])


wildcard_constraints:
    vq="|".join(VQ_RUNS) or "__none__",


def vq_run(run):
    return resolve_run(DAT["vq"], run)


def vq_weights(run):
    return f"{RES}/dat/vq/{run}/model.safetensors"


def vq_record(run):
    return f"{RES}/records/{run}/vq/vq.json"


def vq_figure(run):
    return f"{RES}/dat/vq/{run}/reconstructions.png"


def corruption_record(model):
    return f"{RES}/records/{model}/corruption/corruption.json"


AUX_WEIGHTS["vq"] = vq_weights
# notebook 05: the corruption record of every dat model, and the record and reconstructions of every VQ run
NOTEBOOK_EXTRA_INPUTS["05_dat"] = lambda models: (
    [corruption_record(m) for m in models] + [vq_record(r) for r in VQ_RUNS] + [vq_figure(r) for r in VQ_RUNS]
)


