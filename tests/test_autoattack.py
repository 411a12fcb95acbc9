"""The official AutoAttack (pyautoattack) in the shared evaluation, EOT for randomized models, and the
per-example worst case as the headline robust accuracy (issue 17)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import evaluation_values
from robust_mim.attacks import autoattack as aa
from robust_mim.errors import AttackInputError
from robust_mim.evaluation.suite import run_suite
from robust_mim.papers.chen.tables import ta_ata
from robust_mim.evaluation.worst_case import (decode_mask, encode_mask, overstatement, worst_case_accuracy, worst_case_mask,
                                   worst_case_table)
from tiny_models import NoisyInput

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_BUDGET = {"apgd_steps": 5, "n_target_classes": 2, "fab_steps": 5, "square_queries": 20, "eot_iter": 4}
EPS = 16 / 255


class HugeLogits(nn.Module):
    """Gradient masking by scale: logits × 1e4 saturate the softmax, so the cross-entropy's input gradient
    is exactly 0 on confidently classified points (CE-PGD cannot move); DLR is scale-invariant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1e4


@pytest.fixture(scope="module")
def test_images(digits16):
    x, y = digits16[1].tensors
    return x[:32], y[:32]


def aa_entry(**kw) -> dict:
    return {"name": "autoattack-linf", "attack": "autoattack", "threat_model": "white-box", "eps": [EPS],
            **TINY_BUDGET, **kw}


def pgd20(name: str = "pgd-20") -> dict:
    return {"name": name, "attack": "pgd", "threat_model": "white-box", "eps": [0.0, EPS], "steps": 20,
            "step_size": 2 / 255}


def as_rows(model_id: str, results: list[dict]) -> pd.DataFrame:
    """Suite results as the records DataFrame rows the tables read."""
    return pd.DataFrame([{"model_id": model_id, "evaluation": r["evaluation"], "threat_model": r["threat_model"],
                          **{k: v for k, v in row.items() if k != "attack_info"}}
                         for r in results for row in r["rows"]])


# ----------------------------------------------------------------------------- the worst case


def test_worst_case_is_per_example_below_every_attack():
    res = worst_case_accuracy({"a": [1, 1, 0, 1], "b": [1, 0, 1, 1]})
    assert res["accuracy"] == 0.5  # each attack alone leaves 0.75
    assert res["breaks"] == {"a": 1, "b": 1}
    robust, _ = worst_case_mask({"a": torch.tensor([True, False]), "b": torch.tensor([True, True])})
    assert robust.tolist() == [True, False]


def test_masks_round_trip_and_mismatched_sizes_are_one_line():
    mask = torch.rand(37) > 0.5
    assert torch.equal(decode_mask(encode_mask(mask), 37), mask)
    assert len(encode_mask(mask)) == 10  # 5 bytes for 37 bits
    with pytest.raises(AttackInputError, match="different numbers of examples"):
        worst_case_mask({"a": [True], "b": [True, False]})


# ----------------------------------------------------------------------------- the official AutoAttack


def test_records_name_pyautoattack_and_keep_per_example_correctness(fresh_digits_cnn, test_images):
    import pyautoattack

    x, y = test_images
    (res,) = run_suite(fresh_digits_cnn(), x, y, [aa_entry()], generator=torch.Generator().manual_seed(0))
    row = res["rows"][0]
    info = row["attack_info"]
    assert (info["package"], info["package_version"]) == ("pyautoattack", pyautoattack.__version__)
    assert info["version"] == "standard" and info["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert info["official_budget"] is False and isinstance(info["flags"], list)
    correct = decode_mask(row["correct"], row["n_examples"])
    assert correct.float().mean().item() == pytest.approx(row["accuracy"])
    assert row["accuracy"] == pytest.approx(info["robust_accuracy"]["square"])
    assert res["scoring"] == "deterministic model: one forward pass"


def test_killed_evaluation_resumes_from_state(fresh_digits_cnn, test_images, tmp_path, monkeypatch):
    x, y = test_images
    model, state = fresh_digits_cnn(), tmp_path / "aa.pt"
    kw = {**TINY_BUDGET, "seed": 3}
    x_full, full = aa.autoattack(model, x, y, EPS, **kw)
    real, calls = aa._run_one, []

    def killed_at_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(aa, "_run_one", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        aa.autoattack(model, x, y, EPS, state_path=state, **kw)
    monkeypatch.setattr(aa, "_run_one", real)
    x_resumed, resumed = aa.autoattack(model, x, y, EPS, state_path=state, **kw)
    assert resumed["resumed"] == ["apgd-ce"]
    assert resumed["robust_accuracy"] == full["robust_accuracy"]
    assert torch.equal(x_resumed, x_full)
    other = fresh_digits_cnn()
    with torch.no_grad():
        next(other.parameters()).mul_(1.01)  # retrained weights: the saved state is not theirs
    assert aa.autoattack(other, x, y, EPS, state_path=state, **kw)[1]["resumed"] == []


def test_attack_the_model_cannot_support_is_one_line_before_work(test_images):
    x, y = test_images
    calls = []

    class TwoClasses(nn.Module):
        def forward(self, inp):
            calls.append(inp.shape[0])
            return inp.flatten(1)[:, :2]

    suite = [pgd20(), aa_entry()]
    with pytest.raises(AttackInputError,
                       match="autoattack-linf: AutoAttack standard needs >= 4 classes; the model has 2"):
        run_suite(TwoClasses(), x, y, suite)
    assert calls == [1]  # one forward pass to count the classes, no attack ran
    with pytest.raises(AttackInputError, match="version 'standard' on a randomized model"):
        run_suite(TwoClasses(), x, y, [aa_entry(version="standard")], randomized=True)


def test_randomized_model_gets_rand_and_its_headline_comes_from_eot(fresh_digits_cnn, test_images):
    x, y = test_images
    noisy = NoisyInput(fresh_digits_cnn(), 0.1).eval()
    suite = [{"name": "pgd-linf", "attack": "pgd", "threat_model": "white-box", "eps": [0.0, EPS], "steps": 10},
             {"name": "pgd-linf-eot", "attack": "pgd", "threat_model": "white-box", "eps": [EPS], "steps": 10,
              "eot_samples": 10},
             aa_entry(apgd_steps=10, eot_iter=10)]
    results = run_suite(noisy, x, y, suite, randomized=True, generator=torch.Generator().manual_seed(0),
                        score_draws=5)
    by_name = {r["evaluation"]: r for r in results}
    info = by_name["autoattack-linf"]["rows"][0]["attack_info"]
    assert info["version"] == "rand" and info["attacks"] == ["apgd-ce", "apgd-dlr"] and info["budget"]["eot_iter"] == 10
    assert all(r["scoring"] == "randomized model: majority over 5 draws" for r in results)
    head = worst_case_table(as_rows("noisy", results), EPS).loc["noisy"]
    single_draw = by_name["pgd-linf"]["rows"][-1]["accuracy"] * 100
    assert head["attack"].split("@")[0] in ("pgd-linf-eot", "autoattack-linf")  # an EOT attack decides
    assert head["accuracy"] < single_draw


def test_ce_pgd_fails_dlr_succeeds_and_the_protocol_flag_fires(fresh_digits_cnn, test_images):
    x, y = test_images
    results = run_suite(HugeLogits(fresh_digits_cnn()).eval(), x, y, [pgd20("chen-pgd-linf"), aa_entry()],
                        generator=torch.Generator().manual_seed(0))
    rows = as_rows("masked", results)
    pgd_acc = 100 * rows[(rows["evaluation"] == "chen-pgd-linf") & (rows["eps"] > 0)]["accuracy"].item()
    head = worst_case_table(rows, EPS).loc["masked"]
    assert pgd_acc > head["accuracy"] + 20  # PGD-20 on the cross-entropy is stuck; APGD-T (DLR) is not
    assert head["attack"].startswith("autoattack-linf")
    assert overstatement(pgd_acc, head["accuracy"], 32).startswith("paper protocol overstates by")
    assert overstatement(head["accuracy"] + 1, head["accuracy"], 32) == ""  # within noise: no flag
    chen = rows.assign(headline_eps=EPS, chen_kind="single", chen_task="rotation", chen_pretraining="P3",
                       chen_finetuning="F2", attack_steps=20, attack_step_255=2, members="", backbone="cnn",
                       failed_checks="")
    table = ta_ata(chen).set_index("model_id")
    assert table.loc["masked", "ATA"] == pytest.approx(pgd_acc)
    assert table.loc["masked", "robust accuracy"] == pytest.approx(head["accuracy"])
    assert table.loc["masked", "protocol flag"].startswith("paper protocol overstates by")


def test_cli_suite_runs_official_autoattack_and_eot_on_randomized_models(tmp_path):
    from robust_mim.evaluation.suite import evaluation_suite

    ev = evaluation_values(eps_255=[0, 8], batch_size=64, large_eps_255=64, steps=3, restarts=1, strong_steps_factor=2,
                           strong_restarts=1, eot_samples=3, square_queries=20, headline_eps_255=8, autoattack=True,
                           apgd_steps=4, apgd_target_classes=2, l2_eps=[], aa_apgd_steps=4, aa_target_classes=2,
                           aa_fab_steps=4, aa_square_queries=20, aa_eot_iter=3)
    plain = {e["name"]: e for e in evaluation_suite(ev, randomized=False, has_surrogate=False)}
    assert plain["autoattack-linf"]["version"] == "auto" and "state_path" not in plain["autoattack-linf"]
    assert (plain["autoattack-linf"]["apgd_steps"], plain["autoattack-linf"]["square_queries"]) == (4, 20)
    assert all("eot_wrap" not in e for e in plain.values())
    noisy = {e["name"]: e for e in evaluation_suite({**ev, "aa_square_queries": 7}, randomized=True,
                                                    has_surrogate=True, state_dir=str(tmp_path))}
    assert noisy["autoattack-linf"]["square_queries"] == 7 and noisy["autoattack-linf"]["eot_iter"] == 3
    assert noisy["autoattack-linf"]["state_path"] == str(tmp_path / "autoattack-linf.pt")
    assert noisy["autoattack-style-linf"]["eot_wrap"] == noisy["square-linf"]["eot_wrap"] == 3


def test_eot_wrap_attacks_the_average_and_majority_scoring_is_stable(fresh_digits_cnn, test_images, monkeypatch):
    from robust_mim.evaluation import suite as evaluation
    from robust_mim.attacks.core import ExpectationOverTransformation

    x, y = test_images
    noisy, seen = NoisyInput(fresh_digits_cnn(), 0.1).eval(), []
    real = evaluation.craft

    def spy(spec, model, *args, **kwargs):
        out = real(spec, model, *args, **kwargs)
        seen.append(spec.eot_wrap)
        return out

    monkeypatch.setattr(evaluation, "craft", spy)
    entry = {"name": "sq", "attack": "square", "threat_model": "black-box", "eps": [EPS], "queries": 5, "eot_wrap": 3}
    (res,) = run_suite(noisy, x, y, [entry], randomized=True, generator=torch.Generator().manual_seed(0), score_draws=3)
    assert seen == [3] and res["params"]["eot_wrap"] == 3
    assert isinstance(ExpectationOverTransformation(noisy, 3)(x[:2]), torch.Tensor)
    votes = [evaluation.score_correct(noisy, x, y, randomized=True, draws=15) for _ in range(2)]
    singles = [evaluation.score_correct(noisy, x, y, randomized=True, draws=1) for _ in range(2)]
    assert (votes[0] != votes[1]).sum() <= (singles[0] != singles[1]).sum()
    with pytest.raises(AttackInputError, match="eot_wrap must be an integer >= 1"):
        run_suite(noisy, x, y, [{**entry, "eot_wrap": 0}], randomized=True)


def test_autoattack_check_flags_are_recorded_once(fresh_digits_cnn, test_images):
    x, y = test_images
    probabilities = nn.Sequential(fresh_digits_cnn(), nn.Softmax(dim=1)).eval()  # AutoAttack wants logits
    _, info = aa.autoattack(probabilities, x, y, EPS, **TINY_BUDGET, seed=0)
    flagged = [f for f in info["flags"] if f.startswith("probabilities:")]
    assert len(flagged) == 1 and "logits" in flagged[0]


def test_a_gradient_attack_on_a_model_without_an_input_gradient_is_one_line_before_work(fresh_digits_cnn, test_images):
    """A non-differentiable step (rounding) without BPDA would give gradient attacks nothing to follow and report
    a robustness that is only gradient masking; with BPDA (identity backward) the same model is attacked."""
    from robust_mim.attacks.core import BPDA

    x, y = test_images
    cnn = fresh_digits_cnn()

    class Rounded(nn.Module):
        def __init__(self, bpda: bool):
            super().__init__()
            self.cnn, self.round = cnn, (BPDA(torch.round) if bpda else torch.round)

        def forward(self, inp):
            return self.cnn(self.round(inp * 8) / 8)  # 3-bit quantization of the input

    with pytest.raises(AttackInputError, match="pgd-20: the model passes no gradient to its input .*BPDA"):
        run_suite(Rounded(bpda=False), x, y, [pgd20()])
    square_only = [{"name": "square-linf", "attack": "square", "threat_model": "black-box", "eps": [EPS],
                    "queries": 5}]
    assert run_suite(Rounded(bpda=False), x[:8], y[:8], square_only)  # black-box attacks need no gradient
    assert run_suite(Rounded(bpda=True), x[:8], y[:8], [pgd20()])
