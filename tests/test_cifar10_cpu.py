"""The cifar10-cpu profile: real CIFAR-10 on a 2-core CPU with every paper's core comparison at decidable sizes,
read from memory (uint8 tensors cached once) by the same CLI and workflow as every other profile."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from PIL import Image
from scipy.stats import norm

from conftest import ENV, REPO, profile_schema
from robust_mim.config import resolve_run, validate_config

PROFILE = REPO / "config" / "cifar10-cpu.yaml"


@pytest.fixture(scope="module")
def profile() -> dict:
    return validate_config(yaml.safe_load(PROFILE.read_text()), profile_schema())


def _runs(profile: dict, paper: str) -> dict[str, dict]:
    ft = profile["finetune"]
    return {m: resolve_run(ft, m) for m in ft["runs"] if paper in resolve_run(ft, m)["papers"]}


def test_the_profile_validates_and_is_named_after_its_file(profile):
    assert profile["profile"] == PROFILE.stem == "cifar10-cpu"
    assert profile["data"]["image_size"] == 32 and profile["model"]["arch"].endswith("_patch4_32")
    assert "CPU" in profile["scale_note"] and "micro ViT" in profile["scale_note"]


def test_every_paper_has_its_core_comparison(profile):
    nim, mimir, dmae, chen, dat = (_runs(profile, p) for p in ("nim", "mimir", "dmae", "chen", "dat"))
    assert {m["denoiser"] for m in nim.values() if m.get("defense")} == {"mae", "nim-gamma"}  # NIM vs MAE denoisers
    assert {"nim-gamma-ft", "nim-gamma-de3"} <= set(nim)  # De3 vs plain fine-tuning of the same encoder
    assert {m.get("init") for m in mimir.values() if m["method"]["name"] == "pgd_at"} == \
        {None, "mae", "mimir", "mimir-lam0"}
    assert profile["pretrain"]["runs"]["mimir-lam0"]["objective"]["lam"] == 0
    assert {(m.get("init"), m["method"]["name"]) for m in dmae.values()} == \
        {(None, "gaussian"), ("dmae", "consistency")}
    chen_inits = {m.get("init") for m in chen.values() if m["method"]["name"] == "pgd_at"}  # P1, P2, P3 under F4
    pretext = profile["chen"]["pretrain"]["runs"]
    assert None in chen_inits and {pretext[i]["objective"]["adversarial"] for i in chen_inits - {None}} == {False, True}
    assert {(m.get("init"), m["method"]["name"]) for m in dat.values()} == \
        {(None, "standard"), ("mae", "standard"), (None, "dat"), ("mae", "dat")}
    assert len({m["epochs"] for m in dat.values()}) == 1  # DAT and standard training get the same budget


def test_sample_sizes_can_decide_a_claim(profile):
    ev, cert, corruption = profile["evaluation"], profile["dmae"], profile["dat"]["corruption"]
    assert ev["n_examples"] >= 1000 and profile["chen"]["eval"]["n_examples"] >= 1000
    assert profile["mimir"]["n_examples"] in (None, *range(1000, 10001)) and profile["nim"]["sweep_n_examples"] >= 1000
    assert corruption["n_examples"] == 10_000
    assert cert["n_examples"] >= 500 and cert["n"] >= 10_000 and cert["n0"] == 100 and cert["alpha"] == 0.001
    assert {0.25, 0.5, 0.75} <= set(cert["radii"])
    for sigma in cert["sigmas"]:  # N must allow the largest radius of the table: sigma * Phi^-1(alpha^(1/N))
        assert sigma * norm.ppf(cert["alpha"] ** (1 / cert["n"])) > max(cert["radii"])


def test_the_measured_cpu_choices_are_what_the_profile_runs(profile):
    """In-memory data, one thread per job (two jobs side by side on 2 cores), fp32 (bf16 measured slower here)."""
    assert profile["data"]["name"].endswith("-memory") and profile["threads"] == 1
    sections = [profile["pretrain"], profile["finetune"], profile["chen"]["pretrain"], profile["dat"]["vq"]]
    assert not any(resolve_run(s, r).get("cpu_amp") for s in sections for r in s["runs"])


def test_the_header_arithmetic_uses_the_profiles_epochs(profile):
    header = PROFILE.read_text().split("\nprofile:")[0]
    said = {k: int(v) for k, v in re.findall(r"(pretrain|fine-tune|chen pretext|dat\.vq) (\d+) epochs",
                                             header.replace(",", ""))}
    assert said == {"pretrain": profile["pretrain"]["epochs"], "fine-tune": profile["finetune"]["epochs"],
                    "chen pretext": profile["chen"]["pretrain"]["epochs"], "dat.vq": profile["dat"]["vq"]["epochs"]}


def _tree(root, size=32, per_class=2):
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for k in range(per_class):
                Image.new("RGB", (size, size), (60 * k, 90, 30)).save(root / split / c / f"{k}.jpg")
    return root


def test_the_workflow_plans_every_job_of_the_profile_on_an_in_memory_copy(tmp_path):
    data = _tree(tmp_path / "jpeg")
    override = tmp_path / "data.yaml"
    override.write_text(yaml.safe_dump({"data": {"name": "imagefolder-memory", "root": str(data)}}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "work"),
           "--configfile", str(PROFILE), str(override), "-n", "all"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, re.M))
    assert jobs["certify_smoothed"] == "2" and jobs["corruption_eval"] == "4" and jobs["attack_sigma_sweep"] == "2"
    assert jobs["finetune_classifier"] == "15" and jobs["attack_eval"] == "15"


def test_cli_training_on_an_in_memory_split_decodes_it_once(tmp_path):
    data = _tree(tmp_path / "jpeg", size=16)
    spec = {"profile": "unit", "scale_note": "unit test", "seed": 0, "device": "cpu",
            "data": {"name": "imagefolder-memory", "root": str(data), "image_size": 16, "download": False,
                     "mean": [0.5] * 3, "std": [0.5] * 3, "num_workers": 0},
            "model": {"arch": "vit_nano_patch4_16"},
            "run": {"id": "x", "epochs": 1, "batch_size": 2, "blr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0,
                    "augment": "crop_flip", "method": {"name": "standard"}}}
    def finetune(run_dir):
        cmd = [sys.executable, "-m", "robust_mim.cli", "finetune", "--spec", json.dumps(spec), "--threads", "1",
               "--out", str(run_dir / "model.safetensors"), "--run-dir", str(run_dir)]
        run = subprocess.run(cmd, capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(REPO)}, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert (run_dir / "model.safetensors").is_file()
        (cache,) = (data / ".cache").glob("imagefolder-train-16px-*.safetensors")
        return cache, cache.stat().st_mtime_ns

    first = finetune(tmp_path / "run1")
    assert finetune(tmp_path / "run2") == first  # the second job read the cache, and did not rewrite it


def test_the_cpu_training_benchmark_reports_each_option_beside_its_baseline(tmp_path):
    """Tiny sizes (timings meaningless): every contender is there, ratios are against the plain baseline."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks import bench_cpu_train

    from conftest import torch_threads

    with torch_threads(1):
        r = bench_cpu_train.main(["--batch-size", "4", "--steps", "1", "--repeats", "1", "--data-images", "12",
                                  "--workloads", "ce,pgd_at", "--no-compile", "--out", str(tmp_path / "r.json")])
    data = r["data"]["results"]
    assert r["ratio"] == pytest.approx(data["memory (imagefolder-memory)"]["images_per_s"] /
                                       data["PIL (imagefolder)"]["images_per_s"])
    for s in r["steps"]:
        assert set(s["results"]) == {"fp32", "bf16", "fp32 2 threads"} and s["results"]["fp32"]["ratio"] == 1.0
    assert [s["workload"] for s in r["end_to_end"]] == ["ce"]
    assert 0.9 < r["bf16_input_gradient"]["sign_agreement"] <= 1.0
    assert json.loads((tmp_path / "r.json").read_text())["arch"] == "vit_micro_patch4_32"
