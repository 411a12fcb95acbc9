"""Evaluation suites, threat models and sanity checks (which must fail on a gradient-masking model)."""
import json

import pytest
import torch
import yaml
from torch import nn

from conftest import REPO, evaluation_values, profile_schema
from robust_mim.config import validate_config
from robust_mim.errors import AttackInputError
from robust_mim.evaluation.suite import accuracy, evaluation_suite, run_suite, sanity_checks
from robust_mim.evaluation.verdict import tolerance
from tiny_models import NoisyInput


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(fresh_digits_cnn, digits16):
    """The session's small digits CNN (a copy, trained for a few seconds), and 200 test examples."""
    xte, yte = digits16[1].tensors
    return fresh_digits_cnn(), xte[:200], yte[:200]


class Rounded(nn.Module):
    """Planted gradient masking: non-differentiable input rounding (zero gradient) before the classifier."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


class Saturated(nn.Module):
    """Planted gradient masking that still passes a gradient: logits × 1e4 saturate the softmax, so the
    cross-entropy's input gradient vanishes on confidently classified points (CE-PGD cannot move)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


def small_suite(randomized: bool = False, has_surrogate: bool = False, **values):
    """The profile's suite at a small budget, no AutoAttack or L2: FGSM, PGD, strong PGD, [EOT], Square, [gray-box]."""
    ev = evaluation_values(eps_255=[0, 4, 8], large_eps_255=64, steps=5, strong_steps_factor=2, strong_restarts=2,
                           autoattack=False, autoattack_official=False, square_queries=40, l2_eps=[], **values)
    return evaluation_suite(ev, randomized=randomized, has_surrogate=has_surrogate)


def by_name(checks):
    return {c["check"]: c for c in checks}


def test_normal_model_passes_sanity_checks(trained):
    model, x, y = trained
    results = run_suite(model, x, y, small_suite(has_surrogate=True), surrogates={"bare": model},
                        generator=torch.Generator().manual_seed(0))
    checks = by_name(sanity_checks(results, num_classes=10, randomized=False))
    assert len(checks) == 5
    for name in ("accuracy_non_increasing_in_eps", "large_eps_accuracy_at_chance",
                 "more_steps_restarts_not_weaker", "white_box_strongest"):
        assert checks[name]["passed"] is True, checks[name]
    assert checks["eot_not_weaker_than_single_draw"]["passed"] is None
    assert "deterministic" in checks["eot_not_weaker_than_single_draw"]["details"]["reason"]


def test_a_model_without_input_gradient_is_refused_before_any_attack(trained):
    model, x, y = trained
    with pytest.raises(AttackInputError, match="passes no gradient to its input .*BPDA"):
        run_suite(Rounded(model), x, y, small_suite(has_surrogate=True), surrogates={"bare": model})


def test_gradient_masking_model_is_flagged(trained):
    model, x, y = trained
    masked = Saturated(model)
    results = run_suite(masked, x, y, small_suite(has_surrogate=True), surrogates={"bare": model},
                        generator=torch.Generator().manual_seed(0))
    checks = by_name(sanity_checks(results, num_classes=10, randomized=False))
    failed = [name for name, c in checks.items() if c["passed"] is False]
    assert failed, checks
    # the white-box CE-PGD sees vanishing gradients: at 64/255 it stays far above chance
    assert checks["large_eps_accuracy_at_chance"]["passed"] is False
    assert checks["white_box_strongest"]["passed"] is False  # the bare-model transfer beats white-box


def test_run_suite_result_structure(trained):
    model, x, y = trained
    suite = [{"name": "pgd-linf", "attack": "pgd", "threat_model": "white-box", "eps": [0, 8 / 255],
              "steps": 3, "batch_size": 64}]
    (res,) = run_suite(model, x[:100], y[:100], suite)
    assert res["evaluation"] == "pgd-linf" and res["attack"] == "pgd" and res["threat_model"] == "white-box"
    assert res["params"]["steps"] == 3 and res["params"]["norm"] == "linf" and res["params"]["loss"] == "ce"
    assert res["params"]["restarts"] == 1 and res["params"]["batch_size"] == 64 and res["wall_time_s"] > 0
    assert [r["eps"] for r in res["rows"]] == [0.0, 8 / 255]
    assert all(r["n_examples"] == 100 and r["accuracy"] == r["n_correct"] / 100 for r in res["rows"])
    assert res["rows"][0]["accuracy"] == pytest.approx(accuracy(model, x[:100], y[:100]))
    assert res["rows"][1]["accuracy"] < res["rows"][0]["accuracy"]


def test_autoattack_entry_merges_batches(trained):
    model, x, y = trained
    suite = [{"name": "aa", "attack": "autoattack-style", "threat_model": "white-box", "eps": [16 / 255],
              "steps": 3, "n_target_classes": 1, "queries": 10, "batch_size": 20}]
    (res,) = run_suite(model, x[:40], y[:40], suite, generator=torch.Generator().manual_seed(0))
    row = res["rows"][0]
    info = row["attack_info"]
    assert info["attack"] == "APGD-CE + APGD-DLR-T + Square (ART)" and info["n_examples"] == 40
    assert info["robust_accuracy"]["square"] == pytest.approx(row["accuracy"])
    assert res["params"]["components"] == ["apgd-ce", "apgd-dlr-targeted", "square"]


def test_randomized_model_is_reproducible_and_gets_eot_check(trained):
    model, x, y = trained
    noisy, x, y = NoisyInput(model, 0.2), x[:64], y[:64]
    suite = [e for e in small_suite(randomized=True, eot_samples=4) if e["attack"] == "pgd"]
    state = torch.get_rng_state()
    first = run_suite(noisy, x, y, suite, randomized=True, generator=torch.Generator().manual_seed(3))
    second = run_suite(noisy, x, y, suite, randomized=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left as it was
    assert [r["rows"] for r in first] == [r["rows"] for r in second]
    eot = by_name(sanity_checks(first, 10, randomized=True))["eot_not_weaker_than_single_draw"]
    assert eot["passed"] is not None and eot["details"]["n_comparisons"] >= 2


@pytest.mark.parametrize("entry,surrogates", [
    ({"name": "a", "attack": "pgd", "threat_model": "grey", "eps": [0.1]}, {}),
    ({"name": "a", "attack": "pgd", "threat_model": "gray-box", "eps": [0.1], "surrogate": "bare"}, {}),
    ({"name": "a", "attack": "pgd", "threat_model": "black-box", "eps": [0.1]}, {}),
    ({"name": "a", "attack": "pgd", "threat_model": "white-box", "eps": [0.1], "stepz": 3}, {}),
    ({"name": "a", "attack": "nope", "threat_model": "white-box", "eps": [0.1]}, {}),
    ({"name": "a", "attack": "pgd", "threat_model": "white-box", "eps": [-0.1]}, {}),
    ({"name": "a", "attack": "pgd", "threat_model": "white-box"}, {}),
])
def test_bad_suite_entries_raise_before_running(trained, entry, surrogates):
    model, x, y = trained
    ok = {"name": "ok", "attack": "pgd", "threat_model": "white-box", "eps": [0.1], "steps": 10_000}
    with pytest.raises(AttackInputError):  # raised at validation, before the slow first entry runs
        run_suite(model, x, y, [ok, entry], surrogates=surrogates)


def fake(name, accs, n=500, threat="white-box", **params):
    eps = [0.0, 2 / 255, 4 / 255, 8 / 255, 64 / 255][:len(accs)]
    full = {"norm": "linf", "steps": 10, "restarts": 1, "eot_samples": 1, **params}
    return {"evaluation": name, "attack": "pgd", "threat_model": threat, "surrogate": None, "params": full,
            "rows": [{"eps": e, "accuracy": a, "n_examples": n} for e, a in zip(eps, accs)]}


def test_checks_fail_on_planted_result_patterns():
    good = fake("pgd", [0.9, 0.6, 0.4, 0.2, 0.0])
    rising = fake("pgd", [0.9, 0.6, 0.4, 0.6, 0.0])
    checks = by_name(sanity_checks([rising], 10, False))
    assert checks["accuracy_non_increasing_in_eps"]["passed"] is False
    assert checks["accuracy_non_increasing_in_eps"]["details"]["n_failed"] == 1
    assert by_name(sanity_checks([good], 10, False))["accuracy_non_increasing_in_eps"]["passed"] is True
    stuck = fake("pgd", [0.9, 0.6, 0.4, 0.2, 0.35])
    assert by_name(sanity_checks([stuck], 10, False))["large_eps_accuracy_at_chance"]["passed"] is False
    strong_worse = fake("pgd-strong", [0.9, 0.7, 0.5, 0.3], steps=50, restarts=3)
    assert by_name(sanity_checks([good, strong_worse], 10, False))["more_steps_restarts_not_weaker"]["passed"] is False
    square = fake("square", [0.9, 0.4, 0.2, 0.1], threat="black-box")
    assert by_name(sanity_checks([good, square], 10, False))["white_box_strongest"]["passed"] is False
    eot_worse = fake("pgd-eot", [0.9, 0.7, 0.5, 0.3, 0.0], eot_samples=10)
    assert by_name(sanity_checks([good, eot_worse], 10, True))["eot_not_weaker_than_single_draw"]["passed"] is False
    eot_ok = fake("pgd-eot", [0.9, 0.55, 0.4, 0.2, 0.0], eot_samples=10)
    assert by_name(sanity_checks([good, eot_ok], 10, True))["eot_not_weaker_than_single_draw"]["passed"] is True


def test_checks_tolerate_noise_of_a_couple_of_examples():
    n = 300
    bump = 1 / n  # one example better at a larger eps: noise, not a failure
    noisy = fake("pgd", [0.9, 0.6, 0.4, 0.4 + bump, 0.0], n=n)
    check = by_name(sanity_checks([noisy], 10, False))["accuracy_non_increasing_in_eps"]
    assert check["passed"] is True
    assert check["details"]["comparisons"][2]["tolerance"] == pytest.approx(tolerance(0.4, n))
    assert tolerance(0.4, n) > bump and tolerance(0.4, 4 * n) < tolerance(0.4, n)


def test_absent_inputs_give_passed_none_with_reason():
    checks = sanity_checks([fake("pgd", [0.9, 0.5])], 10, False)
    assert len(checks) == 5
    absent = {c["check"]: c for c in checks if c["passed"] is None}
    assert set(absent) == {"large_eps_accuracy_at_chance", "more_steps_restarts_not_weaker",
                           "white_box_strongest", "eot_not_weaker_than_single_draw"}
    assert all(c["details"]["reason"] for c in absent.values())


def test_evaluation_suite_takes_every_budget_from_the_profile():
    ev = evaluation_values(eps_255=[0, 8], large_eps_255=64, steps=7, strong_steps_factor=3, strong_restarts=2,
                           square_queries=33, square_eps_255=[4])
    plain = evaluation_suite(ev, randomized=False, has_surrogate=False)
    by = {e["name"]: e for e in plain}
    assert [e["name"] for e in plain] == ["fgsm-linf", "pgd-linf", "pgd-linf-strong", "square-linf",
                                          "autoattack-linf", "autoattack-style-linf", "pgd-l2"]
    assert by["pgd-linf"]["eps"][-1] == pytest.approx(64 / 255) and by["pgd-linf-strong"]["eps"] == [8 / 255]
    assert (by["pgd-linf-strong"]["steps"], by["pgd-linf-strong"]["restarts"]) == (21, 2)
    assert by["square-linf"]["eps"] == [4 / 255] and by["square-linf"]["queries"] == 33
    assert by["autoattack-linf"]["apgd_steps"] == ev["aa_apgd_steps"] == 100  # the schema's default: AutoAttack's own
    assert by["autoattack-style-linf"]["steps"] == ev["apgd_steps"] and all("eot_wrap" not in e for e in plain)
    full = evaluation_suite({**ev, "eot_samples": 5}, randomized=True, has_surrogate=True,
                            transfer_surrogates=("resnet",))
    by = {e["name"]: e for e in full}
    assert by["pgd-linf-eot"]["eot_samples"] == by["square-linf"]["eot_wrap"] == by["pgd-l2"]["eot_samples"] == 5
    assert by["pgd-linf-gray-box"]["surrogate"] == "bare"
    assert by["pgd-linf-transfer-resnet"]["threat_model"] == "transfer"
    assert len(set(by)) == len(full)


@pytest.mark.parametrize("profile", ["smoke", "test"])
def test_the_profiles_suites_are_entry_by_entry_those_of_the_cli_before_the_one_builder(profile):
    """Frozen in tests/expected/evaluation_suites.json from the CLI's old `suite_from_spec` (default_suite patched by
    name) at commit 5da6051; regenerate it only when the profile's evaluation section changes on purpose."""
    frozen = json.loads((REPO / "tests" / "expected" / "evaluation_suites.json").read_text())
    config = yaml.safe_load((REPO / "config" / f"{profile}.yaml").read_text())
    ev = validate_config(config, profile_schema())["evaluation"]
    keys = [k for k in frozen if k.startswith(f"{profile}|")]
    assert len(keys) == 8
    for key in keys:
        _, randomized, has_bare, state = (part.split("=")[-1] for part in key.split("|"))
        suite = evaluation_suite(ev, randomized=randomized == "True", has_surrogate=has_bare == "True",
                                 state_dir=None if state == "None" else state)
        assert suite == frozen[key], key
