import inspect

import pytest
import yaml

from conftest import profile_schema
from robust_mim.config import REGISTERED_KINDS, registered_settings, resolve_run, validate_config
from robust_mim.errors import ConfigError


@pytest.fixture(scope="module")
def schema(repo):
    return profile_schema(repo)


def _load(repo, name):
    return yaml.safe_load((repo / "config" / f"{name}.yaml").read_text())


def _error_of(repo, schema, mutate) -> str:
    """The ConfigError line of the smoke profile after ``mutate`` (which must make it invalid)."""
    cfg = _load(repo, "smoke")
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema)
    return str(err.value)


@pytest.mark.parametrize("profile", ["smoke", "test", "cifar10", "imagenet"])
def test_every_profile_validates(repo, schema, profile):
    if not (repo / "config" / f"{profile}.yaml").exists():
        pytest.skip(f"config/{profile}.yaml not written yet")
    cfg = validate_config(_load(repo, profile), schema)
    assert cfg["profile"] == profile


def test_defaults_are_filled_from_the_schema(repo, schema):
    cfg = validate_config({"profile": "x", "data": {"name": "digits"}, "model": {"arch": "vit_nano_patch4_16"}}, schema)
    assert cfg["data"]["image_size"] == 16 and cfg["evaluation"]["steps"] == 10
    assert cfg["pretrain"]["runs"] == {} and cfg["pretrain"]["epochs"] == 10


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c["pretrain"].update(epochs=-1), "pretrain.epochs"),
    (lambda c: c["data"].update(name="mnist"), "data.name"),
    (lambda c: c.update(typo_key=1), "<top level>"),
    (lambda c: c["evaluation"].update(eps_255="8"), "evaluation.eps_255"),
])
def test_schema_rejects_a_bad_config_with_a_readable_message(repo, schema, mutate, where):
    cfg = _load(repo, "smoke")
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema)
    msg = str(err.value)
    assert msg.startswith(f"config error at {where}:") and "\n" not in msg


@pytest.mark.parametrize("mutate, where, says", [
    (lambda c: c["finetune"]["runs"]["at-scratch"].update(mixup_alpha=0.8), "finetune.runs.at-scratch",
     "set mixup_alpha to 0"),
    (lambda c: c["finetune"]["runs"]["at-scratch"].update(cutmix_alpha=1.0, label_smoothing=0.1),
     "finetune.runs.at-scratch", "set cutmix_alpha to 0"),
])
def test_cross_key_mistakes_are_one_config_error_line(repo, schema, mutate, where, says):
    msg = _error_of(repo, schema, mutate)
    assert msg.startswith(f"config error at {where}:") and says in msg and "\n" not in msg


def test_a_norm_pix_denoiser_is_allowed_as_the_official_nim(repo, schema):
    cfg = _load(repo, "smoke")
    cfg["pretrain"]["runs"]["nim-gamma"].update(norm_pix_loss=True)  # De³ un-normalises its prediction
    assert validate_config(cfg, schema)["pretrain"]["runs"]["nim-gamma"]["norm_pix_loss"] is True


@pytest.mark.parametrize("profile", ["cifar10", "imagenet"])
def test_profiles_follow_the_official_nim_de3_recipe(repo, profile):
    cfg = _load(repo, profile)
    nim_runs = {k: v for k, v in cfg["pretrain"]["runs"].items() if v["objective"]["name"] == "nim"}
    assert nim_runs and all(run.get("norm_pix_loss") for run in nim_runs.values())  # official nim_mae pretraining
    de3 = {k: r["defense"] for k, r in cfg["finetune"]["runs"].items() if (r.get("defense") or {}).get("name") == "de3"}
    noise = [d for d in de3.values() if d["sigma_255"] > 0]
    assert noise and all(d["sigma_255"] == 70 for d in noise)  # official eval_sigma 70
    masks = [d for d in de3.values() if d["sigma_255"] == 0]
    assert masks and all(d["mask_ratio"] == 0.75 for d in masks)  # MAE baseline: masking, no noise
    assert max(cfg["nim"]["sigma_sweep_255"]) >= 140  # official README: --sigma_list -5 70 140


def test_soft_targets_stay_allowed_for_standard_fine_tuning(repo, schema):
    cfg = _load(repo, "smoke")
    cfg["finetune"]["runs"]["mae-ft"].update(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    assert validate_config(cfg, schema)["finetune"]["runs"]["mae-ft"]["mixup_alpha"] == 0.8


def test_dat_takes_soft_targets_as_the_official_dat(repo, schema):
    """The official DAT keeps MixUp, CutMix and label smoothing (soft-target attack criterion): allowed."""
    cfg = _load(repo, "smoke")
    cfg["finetune"]["runs"]["dat-scratch"].update(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    assert validate_config(cfg, schema)["finetune"]["runs"]["dat-scratch"]["label_smoothing"] == 0.1


def test_imagenet_dat_run_has_its_reference_augmentation_and_a_from_scratch_baseline(repo, schema):
    cfg = validate_config(_load(repo, "imagenet"), schema)
    ft = cfg["finetune"]
    runs = {m: resolve_run(ft, m) for m in ft["runs"]}
    keys = ("mixup_alpha", "cutmix_alpha", "label_smoothing")
    dat = {m: r for m, r in runs.items() if r["method"]["name"] == "dat"}
    assert dat and all(r[k] > 0 for r in dat.values() for k in keys)
    for r in dat.values():  # same soft targets as the standard fine-tuning of the same encoder (its reference)
        ref = next(x for x in runs.values() if x["method"]["name"] == "standard" and x.get("init") == r.get("init"))
        assert [r[k] for k in keys] == [ref[k] for k in keys]
    scratch = [r for r in runs.values() if not r.get("init") and r["method"]["name"] == "standard"
               and "dat" in r["papers"] and not r.get("defense")]
    assert scratch, "the relative corruption error needs a standard model trained from scratch"
    assert cfg["dat"]["corruption"]["imagenet_c_root"] and cfg["dat"]["corruption"]["severities"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("key, size", [("imagenet_c_root", 16), ("cifar10c_root", 16)])
def test_dat_corruption_files_must_fit_the_image_size(repo, schema, key, size):
    msg = _error_of(repo, schema, lambda c: c["dat"]["corruption"].update({key: "data/x"}))
    assert msg.startswith(f"config error at dat.corruption.{key}:") and f"image_size is {size}" in msg
    both = _error_of(repo, schema, lambda c: c["dat"]["corruption"].update(imagenet_c_root="a", cifar10c_root="b"))
    assert both.startswith("config error at dat.corruption:") and "not both" in both


def test_every_schema_property_has_a_description(schema):
    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}.{key} lacks a description"
            walk(sub, f"{path}.{key}")
    walk(schema, "")
    walk(schema["$defs"]["train_run"], "train_run")


def test_resolve_run_overrides_shared_settings():
    section = {"epochs": 5, "blr": 1e-3, "runs": {"a": {"epochs": 2}, "b": None}}
    assert resolve_run(section, "a") == {"epochs": 2, "blr": 1e-3, "id": "a"}
    assert resolve_run(section, "b")["epochs"] == 5
    with pytest.raises(ConfigError, match="unknown run 'c'"):
        resolve_run(section, "c")


def test_every_cli_command_is_mapped_to_the_module_that_registers_it():
    from robust_mim.cli import COMMAND_MODULES, COMMANDS, build_parser

    build_parser()  # imports every command module
    assert set(COMMANDS) == set(COMMAND_MODULES)
    for name, (fn, _) in COMMANDS.items():
        assert fn.__module__ == COMMAND_MODULES[name], name


def test_a_cli_job_imports_only_its_own_command_module():
    import subprocess
    import sys

    code = ("import sys; from robust_mim.cli import build_parser; build_parser(['finetune', '--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('robust_mim.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "robust_mim.cli.train" in out and "robust_mim.cli.report" not in out and "robust_mim.papers.dat.commands" not in out


# Settings that would silently change a result stop at config time, with one line naming the key.
@pytest.mark.parametrize("mutate, where, says", [
    (lambda c: c["pretrain"]["runs"]["mae"]["objective"].update(mask_ratio=1.5), "pretrain.runs.mae.objective.mask_ratio",
     "greater than or equal to the maximum of 1"),
    (lambda c: c["pretrain"]["runs"]["mae"]["objective"].update(mask_ratio=-0.5), "pretrain.runs.mae.objective.mask_ratio",
     "less than the minimum of 0"),
    (lambda c: c["pretrain"].update(epoch=50), "pretrain", "unknown key 'epoch'"),
    (lambda c: c["pretrain"]["runs"]["mae"].update(epoch=50), "pretrain.runs.mae", "unknown key 'epoch'"),
    (lambda c: c["finetune"]["runs"]["mae-ft"].update(eopchs=3), "finetune.runs.mae-ft", "'eopchs'"),
    (lambda c: c["pretrain"]["runs"]["mae"]["objective"].update(mask_ratoi=0.5), "pretrain.runs.mae.objective",
     "'mask_ratoi'"),
    (lambda c: c["finetune"]["runs"]["at-scratch"]["method"].update(eps_255="8"),
     "finetune.runs.at-scratch.method.eps_255", "'8' is not of type 'number'"),
    (lambda c: c["finetune"]["runs"]["at-scratch"]["method"].update(steps=2.5),
     "finetune.runs.at-scratch.method.steps", "is not of type 'integer'"),
    (lambda c: c["finetune"]["runs"]["nim-gamma-de3"]["defense"].update(sigma_255="50"),
     "finetune.runs.nim-gamma-de3.defense.sigma_255", "is not of type 'number'"),
    (lambda c: c["finetune"]["runs"]["nim-gamma-de3"]["defense"].update(sigma=50),
     "finetune.runs.nim-gamma-de3.defense", "'sigma'"),
    (lambda c: c["pretrain"]["runs"]["mae"]["objective"].update(name="bert"), "pretrain.runs.mae.objective.name",
     "'bert' is not one of"),
    (lambda c: c["finetune"]["runs"]["mae-ft"]["method"].update(name="adv"), "finetune.runs.mae-ft.method.name",
     "'adv' is not one of"),
    (lambda c: c["finetune"]["runs"]["nim-gamma-de3"]["defense"].update(name="jpeg"),
     "finetune.runs.nim-gamma-de3.defense.name", "'jpeg' is not one of"),
    (lambda c: c["pretrain"]["runs"]["nim-gamma"]["objective"].update(sampler="beta"),
     "pretrain.runs.nim-gamma.objective.sampler", "'beta' is not one of"),
    (lambda c: c.update(device="tpu"), "device", "does not match"),
    (lambda c: c["finetune"]["runs"].update({"a`touch x`": {"method": {"name": "standard"}}}), "finetune.runs",
     "id 'a`touch x`' may hold only letters"),
    (lambda c: c["finetune"]["runs"].update({"my model": {"method": {"name": "standard"}}}), "finetune.runs",
     "id 'my model' may hold only"),
    (lambda c: c["pretrain"]["runs"].update({"../x": {"objective": {"name": "mae"}}}), "pretrain.runs", "id '../x'"),
    (lambda c: c["finetune"]["runs"]["mae-ft"].update(papers=["mimr"]), "finetune.runs.mae-ft.papers.0", "'mimr'"),
    (lambda c: c["dat"]["vq"]["runs"].update({"vq-f2": {"codebook_sise": 64}}), "dat.vq.runs.vq-f2", "'codebook_sise'"),
    (lambda c: c["finetune"]["runs"]["mae-ft"].update(init="mea"), "finetune.runs.mae-ft.init", "unknown run 'mea'"),
    (lambda c: c["finetune"]["runs"]["nim-gamma-de3"].update(denoiser="nim-gama"),
     "finetune.runs.nim-gamma-de3.denoiser", "unknown run 'nim-gama'"),
    (lambda c: c["finetune"]["runs"]["dat-scratch"].update(vq="vq-f3"), "finetune.runs.dat-scratch.vq", "unknown run"),
    (lambda c: c["model"].update(arch="vit_huge"), "model.arch", "unknown model 'vit_huge'"),
    (lambda c: c["data"].update(image_size=32), "data.image_size", "does not match model 'vit_micro_patch4_16'"),
    (lambda c: c["finetune"]["runs"]["mae-ft"].update(gpus=3, batch_size=128), "finetune.runs.mae-ft",
     "batch_size 128 does not divide evenly over 3 GPUs"),
])
def test_settings_that_change_results_silently_stop_at_config_time(repo, schema, mutate, where, says):
    msg = _error_of(repo, schema, mutate)
    assert where in msg and says in msg and "\n" not in msg, msg


def test_runs_inherit_their_section_not_the_schema_default(repo, schema):
    cfg = _load(repo, "smoke")
    cfg["pretrain"]["epochs"] = 7
    cfg["pretrain"]["runs"]["mae"].pop("epochs", None)
    filled = validate_config(cfg, schema)
    assert "epochs" not in filled["pretrain"]["runs"]["mae"]
    assert resolve_run(filled["pretrain"], "mae")["epochs"] == 7


def _registries() -> dict:
    """``$defs`` entry -> the registry of the factories its settings reach (every paper's objectives imported)."""
    from robust_mim.defenses import DEFENSES
    from robust_mim.objectives import FINETUNE, PRETRAIN
    from robust_mim.papers import register_objectives
    from robust_mim.papers.chen.objective import PRETEXT_PRETRAIN

    register_objectives()
    return {"pretrain_objective": PRETRAIN, "pretext_objective": PRETEXT_PRETRAIN, "finetune_method": FINETUNE,
            "defense": DEFENSES}


def _branch(schema: dict, kind: str, name: str) -> tuple[dict, list]:
    """(properties, required) of the ``then`` branch of ``$defs[kind]`` for objective/method/defense ``name``."""
    (then,) = [b["then"] for b in schema["$defs"][kind]["allOf"] if b["if"]["properties"]["name"]["const"] == name]
    return then["properties"], then.get("required", [])


def _resolved(schema: dict, entry: dict) -> dict:
    """A schema entry with the keys of its ``$ref`` target beneath its own (``{$ref: ..., default: 0.75}``)."""
    if "$ref" not in entry:
        return entry
    target = schema
    for part in entry["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolved(schema, target), **{k: v for k, v in entry.items() if k != "$ref"}}


@pytest.mark.parametrize("kind", REGISTERED_KINDS)
def test_every_factory_argument_has_its_one_default_in_the_schema(schema, kind):
    """Each registered factory's settings have one schema entry with a description and a default (or are
    required), and the factory itself has no default: a default is written once, in config/schema.yaml."""
    from robust_mim.objectives import AUX_MODULES

    registry = _registries()[kind]
    assert set(schema["$defs"][kind]["properties"]["name"]["enum"]) == set(registry.names())
    for name in registry.names():
        params = inspect.signature(registry.get(name)).parameters
        second = [p.name for p in params.values() if p.default is not p.empty or p.kind is p.VAR_KEYWORD]
        assert not second, f"{kind} '{name}': Python defaults or **kwargs for {second}"
        props, required = _branch(schema, kind, name)
        assert set(props) - {"name"} == set(params) - {"classifier", *AUX_MODULES}, f"{kind} '{name}'"
        for key in set(props) - {"name"}:
            entry = _resolved(schema, props[key])
            assert entry.get("description"), f"{kind} '{name}'.{key} lacks a description"
            assert "default" in entry or key in required, f"{kind} '{name}'.{key} lacks a default"


def test_validation_fills_the_defaults_of_the_named_objective_only(repo, schema):
    cfg = _load(repo, "smoke")
    cfg["pretrain"]["runs"]["nim-gamma"]["objective"] = {"name": "nim"}
    cfg["finetune"]["runs"]["nim-gamma-de3"]["method"] = {"name": "denoised"}
    cfg["finetune"]["runs"]["at-scratch"]["method"] = {"name": "pgd_at", "steps": 3}
    cfg["finetune"]["runs"]["at-scratch"].pop("epochs", None)
    filled = validate_config(cfg, schema)
    nim = filled["pretrain"]["runs"]["nim-gamma"]["objective"]
    denoised = filled["finetune"]["runs"]["nim-gamma-de3"]["method"]
    assert (nim["sampler"], nim["high_255"]) == ("gamma", 150.0)  # NIM pretraining: Gamma (uniform: U(0, 150))
    assert (denoised["sampler"], denoised["high_255"]) == ("uniform", 30.0)  # De³ fine-tuning: U(0, 30)
    assert filled["finetune"]["runs"]["at-scratch"]["method"] == {"name": "pgd_at", "steps": 3, "eps_255": 8.0,
                                                                  "step_255": 2.0, "attack_mode": "eval"}  # no TRADES beta
    assert filled["finetune"]["runs"]["nim-gamma-de3"]["defense"]["mask_ratio"] == 0.0
    assert "epochs" not in filled["finetune"]["runs"]["at-scratch"]  # a run still inherits its section's value


def test_a_step_built_without_the_schema_defaults_is_one_config_error_line():
    from robust_mim.objectives import PRETRAIN, build_step

    with pytest.raises(ConfigError, match="pretraining objective 'mae': .*mask_ratio") as err:
        build_step(PRETRAIN, {"name": "mae"})
    assert "\n" not in str(err.value)


def test_registered_settings_fills_and_validates_one_objective(schema):
    assert registered_settings(schema, "finetune_method", {"name": "gaussian"}) == {"name": "gaussian", "sigma": 0.25}
    with pytest.raises(ConfigError, match="defense error at <top level>: 'sigma_255' is a required property"):
        registered_settings(schema, "defense", {"name": "de3"})
    with pytest.raises(ConfigError, match="unknown key 'beta'"):
        registered_settings(schema, "finetune_method", {"name": "pgd_at", "beta": 6.0})


def test_mimir_pgd_at_may_smooth_labels_as_the_official_fine_tuning(repo, schema):
    cfg = _load(repo, "smoke")
    cfg["finetune"]["runs"]["at-mimir"].update(label_smoothing=0.1)  # the attack takes the arg-max: the label
    assert validate_config(cfg, schema)["finetune"]["runs"]["at-mimir"]["label_smoothing"] == 0.1


def test_the_cifar10_profile_runs_the_official_mimir_recipes(repo, schema):
    cfg = validate_config(_load(repo, "cifar10"), schema)
    adaptive = cfg["mimir"]
    assert adaptive["feature_steps"] == adaptive["mi_steps"] == 100 and 100 in adaptive["pgd_steps"]  # --adap_eval
    assert adaptive["batch_size"] == 16  # eval_cifar10.sh: PGD-MI's HSIC on batches of 16
    for run_id in ("mimir", "mimir-lam0"):
        objective = cfg["pretrain"]["runs"][run_id]["objective"]
        assert objective["hsic"] == "cca" and objective["hsic_group"] == 128  # per-GPU batch of train_cifar10.sh
    official = {"batch_size": 128, "blr": 0.05, "layer_decay": 0.65, "label_smoothing": 0.1, "min_lr": 1e-6,
                "warmup_epochs": 5, "epochs": 50, "weight_decay": 0.05, "augment": "crop_flip", "mixup_alpha": 0.0}
    at_runs = [r for r, run in cfg["finetune"]["runs"].items() if "mimir" in run.get("papers", [])]
    assert len(at_runs) == 4
    for run_id in at_runs:
        run = resolve_run(cfg["finetune"], run_id)
        assert {k: run[k] for k in official} == official, run_id
        assert run["method"] == {"name": "pgd_at", "eps_255": 8, "step_255": 2, "steps": 10, "attack_mode": "eval"}
    assert cfg["model"]["drop_path"] == 0.1


def test_mimir_schema_defaults_are_the_official_adaptive_evaluation(schema):
    props = schema["properties"]["mimir"]["properties"]
    assert props["feature_steps"]["default"] == props["mi_steps"]["default"] == 100
    assert props["batch_size"]["default"] == 16


def test_no_schema_text_is_split_by_an_unquoted_comma(schema):
    """YAML flow mappings end a plain description at its first ', ': the rest becomes a key with no value
    (``{description: seed for training, data order and attacks}``). Every key of the schema is a word."""
    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from keys(v)
        elif isinstance(node, list):
            for v in node:
                yield from keys(v)
    assert not [k for k in keys(schema) if " " in str(k)]
