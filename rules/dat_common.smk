# Paper 5 — DAT: helpers for rules/dat.smk (config slices, paths, notebook inputs).
# Paper 5 — DAT (Mao et al., NeurIPS 2022): VQ autoencoder, DAT training, corruption benchmark.
# train_vq trains each dat.vq run (DAT's discrete image space Q); a finetune run names one in `vq` (method dat,
# or defense vq) and the shared finetune_classifier rule passes it as --vq (AUX_WEIGHTS). Every model listing
# paper dat gets corruption_eval (15 corruptions x the configured severities, one record) besides attack_eval.
DAT = config["dat"]
VQ_RUNS = sorted(DAT["vq"]["runs"])


def dat_config_errors():
    """One line per inconsistency: unknown vq ids, DAT runs without a VQ, ids shared with other runs."""
    errors = [f"finetune.runs.{m}.vq names unknown dat.vq run '{finetune_run(m)['vq']}' (known: {', '.join(VQ_RUNS) or 'none'})"
              for m in MODELS if finetune_run(m).get("vq") and finetune_run(m)["vq"] not in VQ_RUNS]
    errors += [f"finetune.runs.{m} uses method dat but names no `vq` (a dat.vq run id)"
               for m in MODELS if finetune_run(m)["method"]["name"] == "dat" and not finetune_run(m).get("vq")]
    errors += [f"dat.vq run '{r}' is also a pretrain or finetune id" for r in VQ_RUNS if r in PRETRAIN_RUNS + MODELS]
    return errors


DAT_CONFIG_ERRORS = dat_config_errors()
if DAT_CONFIG_ERRORS:
    raise SystemExit(f"robust_mim: config error: {DAT_CONFIG_ERRORS[0]}")


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


