import pytest
import yaml

from robust_mim.config import resolve_run, validate_config
from robust_mim.errors import ConfigError


@pytest.fixture(scope="module")
def schema(repo):
    return yaml.safe_load((repo / "config" / "schema.yaml").read_text())


def _load(repo, name):
    return yaml.safe_load((repo / "config" / f"{name}.yaml").read_text())


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
    (lambda c: c["finetune"].update(label_smoothing=0.1), "finetune.runs.at-scratch", "set label_smoothing to 0"),
    (lambda c: c["pretrain"]["runs"]["nim-gamma"].update(norm_pix_loss=True), "finetune.runs.nim-gamma-de3",
     "pretrained with norm_pix_loss"),
])
def test_cross_key_mistakes_are_one_config_error_line(repo, schema, mutate, where, says):
    cfg = _load(repo, "smoke")
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema)
    msg = str(err.value)
    assert msg.startswith(f"config error at {where}:") and says in msg and "\n" not in msg


def test_soft_targets_stay_allowed_for_standard_fine_tuning(repo, schema):
    cfg = _load(repo, "smoke")
    cfg["finetune"]["runs"]["mae-ft"].update(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    assert validate_config(cfg, schema)["finetune"]["runs"]["mae-ft"]["mixup_alpha"] == 0.8


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
        assert fn.__module__ == f"robust_mim.cli.{COMMAND_MODULES[name]}", name


def test_a_cli_job_imports_only_its_own_command_module():
    import subprocess
    import sys

    code = ("import sys; from robust_mim.cli import build_parser; build_parser(['finetune', '--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('robust_mim.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "robust_mim.cli.train" in out and "robust_mim.cli.report" not in out and "robust_mim.cli.dat" not in out
