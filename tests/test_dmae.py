"""Paper 3 (DMAE): fine-tuning methods, the certify command's record and the PGD-EOT certificate check."""
from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import norm
from torch import nn

from conftest import filled
from robust_mim.certify import (
    Smooth, attack_certified_points, certificate_check, certification_rows, certify_dataset, radius_grid,
)
from robust_mim.cli import main
from robust_mim.cli.common import build_classifier
from robust_mim.errors import ConfigError
from robust_mim.io import save_weights
from robust_mim.objectives import FINETUNE, build_step
from robust_mim.papers.dmae.objective import default_eta

SHAPE = (3, 16, 16)
DIM = 3 * 16 * 16


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


class Recorder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, *SHAPE, generator=gen), torch.randint(0, 10, (n,), generator=gen)


# ----------------------------------------------------------------------------- FINETUNE methods


@pytest.mark.parametrize("settings", [{"name": "gaussian", "sigma": 0.5},
                                      {"name": "consistency", "sigma": 0.25, "lbd": 2.0, "eta": 0.5}])
def test_finetune_methods_give_finite_losses_that_backprop(settings):
    model = tiny_cnn()
    x, y = batch()
    loss, metrics = build_step(FINETUNE, filled("finetune_method", settings))(model, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss) and all(map(lambda v: v == v, metrics.values()))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_gaussian_method_feeds_unclamped_noise_of_the_configured_sigma():
    model = Recorder(tiny_cnn())
    x, y = batch(32)
    torch.manual_seed(0)
    build_step(FINETUNE, filled("finetune_method", {"name": "gaussian", "sigma": 0.5}))(model, x, y)
    noise = model.inputs[0] - x
    assert noise.std().item() == pytest.approx(0.5, rel=0.03)
    assert model.inputs[0].min() < 0 and model.inputs[0].max() > 1  # not clamped, as certification


def test_consistency_uses_two_noisy_copies_and_eta_point_one_at_sigma_one():
    model = Recorder(tiny_cnn())
    x, y = batch(4)
    loss, parts = build_step(FINETUNE, filled("finetune_method", {"name": "consistency", "sigma": 1.0}))(model, x, y)
    assert model.inputs[0].shape[0] == 2 * len(x)
    assert default_eta(1.0) == 0.1 and default_eta(0.25) == default_eta(0.5) == 0.5
    assert parts["loss"] == pytest.approx(parts["ce"] + 2.0 * parts["kl"] + 0.1 * parts["entropy"], rel=1e-5)


@pytest.mark.parametrize("settings", [{"name": "gaussian", "sigma": 0.0},
                                      {"name": "consistency", "sigma": 0.25, "num_noise": 0},
                                      {"name": "gaussian", "sigma": 0.25, "bogus": 1}])
def test_bad_method_settings_raise_one_config_error(settings):
    with pytest.raises(ConfigError):
        build_step(FINETUNE, {**filled("finetune_method", {"name": settings["name"]}), **settings})


def test_cifar10_dmae_runs_follow_the_official_pretraining_and_finetune_md(repo):
    """quanlin-wu/dmae: pretraining with --norm_pix_loss; finetune_cifar10.py with layer decay 0.65, label
    smoothing 0.1, flip-only augmentation and min lr 1e-6 — and the smoothed targets reach both methods."""
    import yaml

    from conftest import profile_schema
    from robust_mim.cli.common import train_config
    from robust_mim.config import resolve_run, validate_config
    from robust_mim.engine import mix_batch

    cfg = validate_config(yaml.safe_load((repo / "config" / "cifar10.yaml").read_text()), profile_schema(repo))
    assert resolve_run(cfg["pretrain"], "dmae")["norm_pix_loss"] is True
    runs = {m: resolve_run(cfg["finetune"], m) for m in cfg["finetune"]["runs"]}
    pretrained = [m for m, r in runs.items() if "dmae" in r["papers"] and r.get("init")]
    assert {runs[m]["init"] for m in pretrained} == {"mae", "dmae"} and len(pretrained) == 9
    for m in pretrained:
        tc = train_config({"seed": 0, "data": cfg["data"], "run": runs[m]}, num_classes=10)
        assert (tc.layer_decay, tc.label_smoothing, tc.augment, tc.min_lr) == (0.65, 0.1, "flip", 1e-6), m
        assert (tc.optimizer, tc.lr, tc.weight_decay, tc.betas) == ("adamw", 5e-4, 0.05, (0.9, 0.999)), m
    x, y = batch()
    _, soft = mix_batch(x, y, 10, label_smoothing=0.1)  # [N, K]: 0.91 on the label, 0.01 elsewhere
    for method in (runs["dmae-cons-s025"]["method"], runs["dmae-gauss-s025"]["method"]):
        loss, _ = build_step(FINETUNE, method)(tiny_cnn(), x, soft)
        assert torch.isfinite(loss)


# ----------------------------------------------------------------------------- certify command


def spec_for(n0: int = 20, n: int = 200, alpha: float = 0.001, n_examples: int = 12) -> dict:
    return {
        "profile": "unit", "scale_note": "unit test", "seed": 0, "device": "cpu",
        "data": {"name": "digits", "root": "data", "image_size": 16, "download": False,
                 "mean": [0.5] * 3, "std": [0.5] * 3},
        "model": {"arch": "vit_nano_patch4_16", "drop_path": 0.0},
        "run": {"id": "const", "method": {"name": "gaussian", "sigma": 0.25}, "papers": ["dmae"], "init": None},
        "pretrain_objective": None,
        "dmae": {"sigmas": [0.25], "n0": n0, "n": n, "alpha": alpha, "n_examples": n_examples, "batch_size": 100,
                 "radii": [0.0, 0.25, 0.5, 0.75, 1.0], "attack_examples": 2, "attack_steps": 2,
                 "attack_noise_samples": 4, "attack_eot_samples": 1, "attack_factors": [1.0, 2.0]},
    }


def constant_classifier_weights(path, spec: dict, c: int) -> None:
    """A profile ViT whose head ignores the features and always says class ``c``."""
    model = build_classifier(spec, 10)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(10.0 * nn.functional.one_hot(torch.tensor(c), 10).float())
    save_weights(model.state_dict(), path, {"kind": "classifier"})


def test_certify_command_writes_a_record_with_the_certification_parameters(tmp_path, digits16):
    _, test = digits16
    spec = spec_for()
    labels = test.tensors[1][: spec["dmae"]["n_examples"]]
    c = int(labels.mode().values)
    constant_classifier_weights(tmp_path / "w.safetensors", spec, c)
    out = tmp_path / "rec.json"
    code = main(["certify", "--spec", json.dumps(spec), "--weights", str(tmp_path / "w.safetensors"),
                 "--model-id", "const", "--sigma", "0.25", "--out", str(out), "--log", str(tmp_path / "log")])
    assert code == 0
    rec = json.loads(out.read_text())
    expected_max = 0.25 * norm.ppf(0.001 ** (1 / 200))
    assert (rec["sigma"], rec["n0"], rec["n"], rec["alpha"], rec["n_images"]) == (0.25, 20, 200, 0.001, 12)
    assert rec["max_radius"] == pytest.approx(expected_max, rel=1e-9)
    assert "200" in rec["certification_note"] and "100,000" in rec["certification_note"]
    # the constant classifier certifies exactly its own class, at the largest radius N allows
    share = float((labels == c).float().mean())
    for row in rec["images"]:
        assert row["correct"] == int(row["label"] == c)
        assert row["radius"] == pytest.approx(expected_max, rel=1e-9)
    by_radius = {round(r["radius"], 6): r for r in rec["rows"]}
    assert by_radius[0.0]["certified_accuracy"] == pytest.approx(share)
    assert by_radius[0.5]["certified_accuracy"] == 0 and not by_radius[0.5]["within_max_radius"]
    assert rec["certified_accuracy"]["0.25"] == pytest.approx(share)
    # the empirical check ran on certified-correct images and a constant model cannot be flipped
    summary = {s["factor"]: s for s in rec["empirical_check"]["summary"]}
    assert summary[1.0]["n_attacked"] == 2 and summary[1.0]["n_flipped"] == 0 and summary[1.0]["passed"]
    assert summary[2.0]["passed"] is None
    assert all(c["passed"] is not False for c in rec["sanity_checks"])
    assert rec["provenance"]["seed"] == 0 and rec["params"]["sigma"] == 0.25
    assert (rec["method"], rec["train_sigma"], rec["pretrain_objective"]) == ("gaussian", 0.25, None)


def test_a_killed_certification_resumes_from_its_last_image_with_the_same_result(tmp_path, digits16, monkeypatch):
    """The state saved after each image (rows + generator state) makes kill + rerun = one uninterrupted run."""
    from robust_mim.papers.dmae import commands

    spec = spec_for()
    torch.manual_seed(1)
    save_weights(build_classifier(spec, 10).state_dict(), tmp_path / "w.safetensors", {"kind": "classifier"})

    def certify(name: str) -> dict:
        out = tmp_path / f"{name}.json"
        code = main(["certify", "--spec", json.dumps(spec), "--weights", str(tmp_path / "w.safetensors"),
                     "--model-id", "rand", "--sigma", "0.25", "--out", str(out), "--log", str(tmp_path / name)])
        assert code == 0
        return json.loads(out.read_text())

    whole = certify("whole")
    assert len({r["radius"] for r in whole["images"]}) > 2  # the noise draws matter: a wrong stream would show
    save = commands.save_certification

    def killed_after_five(state, key, rows, generator):
        save(state, key, rows, generator)
        if len(rows) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(commands, "save_certification", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        certify("killed")
    assert len(json.loads((tmp_path / "killed.state" / "certify.json").read_text())["rows"]) == 5
    monkeypatch.setattr(commands, "save_certification", save)
    resumed = certify("killed")
    assert "resumed certification from" in (tmp_path / "killed").read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(resumed["images"]) == strip(whole["images"])
    assert resumed["rows"] == whole["rows"] and resumed["empirical_check"] == whole["empirical_check"]
    assert not (tmp_path / "killed.state" / "certify.json").exists()  # done: the state is removed
    # a state of another setting is set aside, never mixed in
    (tmp_path / "other.state").mkdir()
    (tmp_path / "other.state" / "certify.json").write_text(json.dumps({"key": {"sigma": 0.5}, "rows": [{}] * 5}))
    assert strip(certify("other")["images"]) == strip(whole["images"])
    assert "is of another model or setting: starting from the first image" in (tmp_path / "other").read_text()


def test_certify_command_reports_a_config_error_in_one_line(tmp_path, capsys):
    spec = spec_for(n_examples=4)
    spec["dmae"]["alpha"] = 1.5
    constant_classifier_weights(tmp_path / "w.safetensors", spec, 0)
    code = main(["certify", "--spec", json.dumps(spec), "--weights", str(tmp_path / "w.safetensors"),
                 "--model-id", "m", "--sigma", "0.25", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "alpha" in err[0]


# ----------------------------------------------------------------------------- certification rows and the check


def test_certification_rows_cover_table_radii_and_flag_radii_beyond_the_max():
    rows = [{"correct": 1, "radius": 0.3}, {"correct": 1, "radius": 0.1}, {"correct": 0, "radius": 0.4}]
    grid = radius_grid([0.0, 0.25, 1.0], 0.42)
    assert {0.0, 0.25, 1.0, 0.42} <= set(grid) and grid == sorted(grid)
    out = certification_rows(rows, [0.0, 0.25, 1.0], 0.42)
    acc = {round(r["radius"], 6): r["certified_accuracy"] for r in out}
    assert acc[0.0] == pytest.approx(2 / 3) and acc[0.25] == pytest.approx(1 / 3) and acc[0.42] == 0
    assert [r["radius"] for r in out if r["in_table"]] == [0.0, 0.25, 1.0]
    assert all(r["within_max_radius"] == (r["radius"] <= 0.42) for r in out)
    values = [r["certified_accuracy"] for r in out]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_certificate_check_allows_about_two_alpha_flips_and_no_more():
    rows = [{"factor": 1.0, "flipped": int(i < 2), "abstained": 0} for i in range(32)]
    rows += [{"factor": 2.0, "flipped": 1, "abstained": 0} for _ in range(32)]
    strict, loose = certificate_check(rows, alpha=0.001), certificate_check(rows[1:], alpha=0.001)
    assert strict[0]["allowed_flips"] == 1 and strict[0]["n_flipped"] == 2 and strict[0]["passed"] is False
    assert loose[0]["n_flipped"] == 1 and loose[0]["passed"] is True
    assert strict[1]["factor"] == 2.0 and strict[1]["passed"] is None and strict[1]["flipped_fraction"] == 1.0


def linear_classifier(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Two classes split by the hyperplane w·(x − 0.5) = 0, ‖w‖ = 1: g equals f for Gaussian noise."""
    w = torch.randn(DIM, generator=torch.Generator().manual_seed(seed))
    w = w / w.norm()
    linear = nn.Linear(DIM, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([torch.zeros(DIM), 20 * w]))
        linear.bias.copy_(torch.tensor([0.0, -20 * 0.5 * float(w.sum())]))
    return nn.Sequential(nn.Flatten(), linear), w


def test_pgd_eot_respects_true_certificates_and_breaks_inflated_ones():
    torch.manual_seed(0)
    model, w = linear_classifier()
    smooth = Smooth(model, 2, 0.25)
    x = torch.stack([(0.5 + d * w).view(SHAPE) for d in (0.3, 0.35, 0.4)])  # class 1, distance d
    y = torch.ones(3, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    certs = certify_dataset(smooth, x, y, n0=50, n=1000, alpha=0.001, batch_size=500, generator=gen)
    radii = [r["radius"] for r in certs]
    assert all(r["correct"] for r in certs) and all(0 < rad < d for rad, d in zip(radii, (0.3, 0.35, 0.4)))
    rows = attack_certified_points(smooth, x, y, radii, factors=(1.0, 2.5), steps=10, noise_samples=8,
                                   n=1000, alpha=0.001, batch_size=500, generator=gen)
    summary = {s["factor"]: s for s in certificate_check(rows, alpha=0.001)}
    assert summary[1.0]["n_flipped"] == 0 and summary[1.0]["passed"] is True
    assert summary[2.5]["n_flipped"] == 3  # beyond the boundary the same attack flips every image
    inflated = attack_certified_points(smooth, x, y, [2.5 * r for r in radii], steps=10, noise_samples=8,
                                       n=1000, alpha=0.001, batch_size=500, generator=gen)
    assert certificate_check(inflated, alpha=0.001)[0]["passed"] is False


def test_dmae_claims_compare_certified_accuracies_with_the_binomial_noise():
    import pandas as pd

    from robust_mim.papers.dmae.tables import _beats

    best = pd.DataFrame({"r=0.25": [16.0, 15.0, 60.0, 10.0], "r=0.5": [10.0, 9.0, 40.0, 5.0]},
                        index=["a-close", "b", "a-far", "a-worse"])
    radii = (0.25, 0.5)
    assert _beats(best, "a-close", "b", radii, n=100)[0] == "inconclusive (within noise)"
    status, evidence = _beats(best, "a-far", "b", radii, n=100)
    assert status == "held" and "noise ±" in evidence and "100 images" in evidence
    assert _beats(best.assign(**{"r=0.25": [16.0, 50.0, 60.0, 10.0]}), "a-worse", "b", radii, n=100)[0] \
        == "not held"
    assert _beats(best, "a-close", "b", radii, n=100_000)[0] == "held"  # 1 point is real at n=1e5


def test_table_radii_are_those_the_records_were_certified_for_not_the_papers():
    import pandas as pd

    from robust_mim.certify import certification_rows
    from robust_mim.papers.dmae.tables import TABLE_RADII, table_radii

    # a profile certifying r <= 0.75 (N too small for r = 1): its rows run on a finer grid up to the max radius
    rows = [{"correct": True, "radius": 0.6}, {"correct": False, "radius": 0.0}]
    cert = pd.DataFrame(certification_rows(rows, [0.0, 0.25, 0.5, 0.75], max_radius=0.7996))
    assert cert["radius"].nunique() > 4
    assert table_radii(cert) == (0.0, 0.25, 0.5, 0.75)
    assert table_radii(cert.drop(columns="in_table")) == TABLE_RADII  # records of older code: the paper's radii
