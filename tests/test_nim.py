"""Paper 1 (NIM / De³): σ samplers, NIM denoising, the De³ defense, fine-tuning on denoised images."""
import math

import pytest
import torch
from torch import nn

from conftest import filled
from robust_mim.defenses import De3, build_defense
from robust_mim.errors import ConfigError
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import build_vit_encoder, vit_spec
from robust_mim.objectives import FINETUNE, PRETRAIN, build_step
from robust_mim.objectives.mim import add_gaussian_noise, sample_sigma
from robust_mim.papers.nim.objective import denoised_images, pretraining_label

MEAN, STD = [0.5] * 3, [0.5] * 3
N_DRAWS = 200_000
NIM = filled("pretrain_objective", {"name": "nim"})  # the schema's defaults of NIM pretraining
SAMPLER_ARGS = {k: NIM[k] for k in ("concentration", "scale_255", "high_255", "sigma_255")}


def tiny_mae() -> MaskedAutoencoder:
    return MaskedAutoencoder(vit_spec("vit_nano_patch4_16"), MEAN, STD)


def tiny_classifier(k: int = 10) -> ImageClassifier:
    spec = vit_spec("vit_nano_patch4_16")
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, k, MEAN, STD)


# ----------------------------------------------------------------------------- σ samplers


@pytest.mark.parametrize("sampler, kwargs, mean_255, var_255", [
    ("gamma", {}, 25 * 3, 25 * 3 ** 2),  # the schema's default Gamma(k=25, θ=3): mean kθ, variance kθ²
    ("gamma", {"concentration": 25, "scale_255": 3}, 75, 225),  # integers, as YAML gives them
    ("gamma", {"concentration": 40, "scale_255": 2}, 80, 160),
    ("uniform", {}, 150 / 2, 150 ** 2 / 12),  # U(0, 150)
    ("uniform", {"high_255": 30.0}, 15, 30 ** 2 / 12),  # De³ fine-tuning noise U(0, 30)
])
def test_sigma_samplers_match_their_distribution_moments(sampler, kwargs, mean_255, var_255):
    torch.manual_seed(0)
    s = sample_sigma(N_DRAWS, sampler, **{**SAMPLER_ARGS, **kwargs}).double() * 255  # back to 1/255 units
    mean, var = mean_255, var_255
    assert abs(s.mean().item() - mean) < 5 * math.sqrt(var / N_DRAWS)  # 5 standard errors
    assert s.var().item() == pytest.approx(var, rel=0.03)
    assert s.min().item() >= 0


def test_fixed_sigma_is_exact_and_constant():
    s = sample_sigma(1000, "fixed", **{**SAMPLER_ARGS, "sigma_255": 75.0})
    assert s.unique().numel() == 1 and s[0].item() == pytest.approx(75 / 255, abs=1e-7)


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown sigma sampler"):
        build_step(PRETRAIN, {**filled("pretrain_objective", {"name": "nim"}), "sampler": "laplace"})


# ----------------------------------------------------------------------------- NIM denoising


def _heldout_denoising_mse(mae: MaskedAutoencoder, x: torch.Tensor, sigma: float) -> float:
    gen = torch.Generator().manual_seed(123)
    noisy = x + sigma * torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        return ((mae.eval().reconstruct(noisy) - x) ** 2).mean().item()


def test_nim_training_reduces_reconstruction_error_on_heldout_noisy_images(digits16, one_thread):
    torch.manual_seed(0)
    (train, test), mae = digits16, tiny_mae()
    x_test = test.tensors[0][:200]
    before = _heldout_denoising_mse(mae, x_test, 75 / 255)
    step = build_step(PRETRAIN, filled("pretrain_objective", {"name": "nim", "sampler": "gamma"}))
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    x_train = train.tensors[0]
    mae.train()
    for i in range(150):
        batch = x_train[torch.randint(0, len(x_train), (64,))]
        loss, metrics = step(mae, batch, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _heldout_denoising_mse(mae, x_test, 75 / 255)
    assert metrics["sigma_mean"] == pytest.approx(75 / 255, rel=0.15)  # σ per image ~ Γ(25, 3)/255
    gen = torch.Generator().manual_seed(123)
    identity = ((x_test + 75 / 255 * torch.randn(x_test.shape, generator=gen)).clamp(0, 1) - x_test).pow(2).mean()
    assert after < 0.5 * before, (before, after)
    assert after < 0.5 * identity.item(), (after, identity)  # it denoises: better than keeping the noisy image


# ----------------------------------------------------------------------------- De³


def test_de3_is_differentiable_randomized_and_denoises_into_the_unit_box():
    torch.manual_seed(0)
    clf, mae = tiny_classifier().eval(), tiny_mae()
    defended, randomized = build_defense(filled("defense", {"name": "de3", "sigma_255": 50}), clf, mae)
    assert isinstance(defended, De3) and randomized
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    logits = defended(x)
    assert logits.shape == (6, 10)
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    den = defended.purify(x.detach() * 3 - 1)  # even inputs far outside [0, 1]
    assert den.min() >= 0 and den.max() <= 1
    with torch.no_grad():
        assert not torch.allclose(defended(x), defended(x))  # fresh noise each call


def test_de3_without_noise_is_deterministic_and_equals_classify_of_reconstruction():
    torch.manual_seed(0)
    clf, mae = tiny_classifier().eval(), tiny_mae().eval()
    defended, randomized = build_defense(filled("defense", {"name": "de3", "sigma_255": 0}), clf, mae)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert not randomized and torch.allclose(defended(x), defended(x), atol=1e-5)  # up to token-order float sums
        assert torch.allclose(defended(x), clf(mae.reconstruct(x)))
        assert torch.allclose(defended(x), defended.head(defended.embed(x)))  # forward == head(embed)


def test_de3_noise_has_the_requested_scale():
    mae = tiny_mae()
    seen = {}
    mae.reconstruct = lambda x_noisy, **_: seen.setdefault("x", x_noisy).clamp(0, 1)  # record what is denoised
    De3(tiny_classifier(), mae, sigma=0.2).eval()(torch.full((64, 3, 16, 16), 0.5))
    assert (seen["x"] - 0.5).std().item() == pytest.approx(0.2, rel=0.05)


def test_de3_needs_a_denoiser_and_a_sigma():
    with pytest.raises(ConfigError, match="needs a denoiser"):
        build_defense(filled("defense", {"name": "de3", "sigma_255": 50}), tiny_classifier(), None)
    with pytest.raises(ConfigError, match="sigma_255"):
        build_defense({"name": "de3"}, tiny_classifier(), tiny_mae())


# ----------------------------------------------------------------------------- denoised fine-tuning


def test_denoised_step_backprops_only_into_the_classifier():
    torch.manual_seed(0)
    clf, mae = tiny_classifier(), tiny_mae()
    mae_before = {k: v.clone() for k, v in mae.state_dict().items()}
    step = build_step(FINETUNE, filled("finetune_method", {"name": "denoised", "high_255": 30}), denoiser=mae)
    opt = torch.optim.SGD(list(clf.parameters()) + list(mae.parameters()), lr=0.1)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    loss, metrics = step(clf, x, y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.head.parameters())
    assert all(p.grad is None and not p.requires_grad for p in mae.parameters())
    opt.step()
    assert all(torch.equal(v, mae.state_dict()[k]) for k, v in mae_before.items())
    assert not mae.training and 0 <= metrics["sigma_mean"] <= 30 / 255


class Spy(nn.Module):
    """A classifier that remembers its last input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.model(x)


def test_denoised_step_trains_on_the_denoisers_output():
    torch.manual_seed(0)
    mae, clf = tiny_mae(), Spy(tiny_classifier())
    step = build_step(FINETUNE, filled("finetune_method", {"name": "denoised"}), denoiser=mae)
    x = torch.rand(5, 3, 16, 16)
    torch.manual_seed(1)
    step(clf, x, torch.zeros(5, dtype=torch.long))
    torch.manual_seed(1)
    sigma = sample_sigma(5, "uniform", **{**SAMPLER_ARGS, "high_255": 30.0})  # the step's draws, replayed
    assert torch.allclose(clf.seen, denoised_images(mae, x, sigma), atol=1e-6)
    assert not torch.allclose(clf.seen, x, atol=1e-2)


def test_denoised_method_requires_a_denoiser():
    with pytest.raises(ConfigError, match="needs denoiser"):
        build_step(FINETUNE, filled("finetune_method", {"name": "denoised"}))


def test_add_gaussian_noise_uses_a_per_image_sigma():
    torch.manual_seed(0)
    x = torch.zeros(2, 3, 32, 32)
    noisy = add_gaussian_noise(x, torch.tensor([0.0, 0.5]))
    assert noisy[0].abs().max() == 0 and noisy[1].std().item() == pytest.approx(0.5, rel=0.1)


def test_pretraining_label_names_the_sampler():
    assert pretraining_label({"name": "nim", "sampler": "fixed", "sigma_255": 75}) == "NIM-fixed"
    assert pretraining_label({"name": "mae", "mask_ratio": 0.75}) == "MAE"
    assert pretraining_label(None) == "none"


# ----------------------------------------------------------------------------- tables and claims (from records)


def _write(root, model, evaluation, rows, *, threat="white-box", defense=None, init="nim-gamma", extra=None, n=100):
    from robust_mim.records import make_record, write_record

    prov = {"git_commit": "x", "config_hash": "x", "seed": 0, "versions": {}, "device": "cpu", "wall_time_s": 0.0,
            "date": "today"}
    folder = "sigma_sweep" if evaluation == "sigma-sweep" else "robustness"
    rec = make_record(model, evaluation, "unit", rows, n_examples=n, params={}, provenance=prov, paper=["nim"],
                      threat_model=threat, defense=defense, init=init, scale_note="unit test", sanity_checks=[],
                      **(extra or {}))
    write_record(root / "records" / model / folder / f"{evaluation}.json", rec)


def _suite(root, model, clean, robust, *, defense=None, init="nim-gamma"):
    """Records of the shared suite with the given clean and robust accuracy (4/255 and 8/255)."""
    rows = [{"eps": 0.0, "accuracy": clean, "n_examples": 100}] + \
        [{"eps": e / 255, "accuracy": robust, "n_examples": 100} for e in (4, 8)]
    for ev in ("pgd-linf", "fgsm-linf"):
        _write(root, model, ev, rows, defense=defense, init=init)
    if defense:
        _write(root, model, "pgd-linf-eot", rows, defense=defense, init=init)


def _sweep(root, model, pretraining, curve, init):
    rows = [r for s, c, a in curve for r in ({"sigma_255": s, "eps": 0.0, "accuracy": c, "n_examples": 100},
                                              {"sigma_255": s, "eps": 8 / 255, "accuracy": a, "n_examples": 100})]
    _write(root, model, "sigma-sweep", rows, defense={"name": "de3", "sigma_255": 50}, init=init,
           extra={"denoiser": init, "pretraining": pretraining})


def _load(root):
    from robust_mim.papers.nim import tables as tn

    df, models = tn.load_nim(root, "unit")
    table = tn.robustness_table(df, models)
    return tn, table, tn.sweep_table(df)


def test_tables_and_claims_follow_the_records(tmp_path):
    de3 = {"name": "de3", "sigma_255": 50}
    _suite(tmp_path, "nim-gamma-ft", 0.95, 0.02)
    _suite(tmp_path, "nim-gamma-de3", 0.90, 0.60, defense=de3)
    _suite(tmp_path, "mae-de3", 0.85, 0.10, defense=de3, init="mae")
    _sweep(tmp_path, "nim-gamma-de3", "NIM-gamma", [(0, 0.97, 0.05), (25, 0.93, 0.50), (50, 0.80, 0.62)], "nim-gamma")
    _sweep(tmp_path, "nim-fixed-de3", "NIM-fixed", [(0, 0.60, 0.02), (25, 0.60, 0.10), (50, 0.70, 0.30)], "nim-fixed")
    _sweep(tmp_path, "mae-de3", "MAE", [(0, 0.9, 0.0), (50, 0.5, 0.1)], "mae")
    tn, table, sweep = _load(tmp_path)
    assert table.loc["nim-gamma-de3", "PGD-EOT 8/255"] == 60.0 and table.loc["nim-gamma-de3", "pretraining"] == "NIM-gamma"
    assert table.loc["nim-gamma-ft", "defense"] == "plain" and pd_isna(table.loc["nim-gamma-ft", "PGD-EOT 8/255"])
    assert table.loc["mae-de3", "clean"] == 85.0 and table.loc["mae-de3", "pretraining"] == "MAE"
    verdicts = tn.claims(table, sweep, 8).set_index("claim")["verdict"]
    assert (verdicts == "held").all(), verdicts.to_dict()


def test_noise_counts_the_attacked_images_not_a_corruption_records(tmp_path):
    """A model also evaluated on 10,000 corrupted images (DAT's reference) keeps the n of its attacks."""
    _suite(tmp_path, "nim-gamma-ft", 0.95, 0.02)
    _write(tmp_path, "nim-gamma-ft", "corruption", [{"eps": 0.0, "accuracy": 0.5, "n_examples": 10_000}], n=10_000)
    _, table, _ = _load(tmp_path)
    assert table.loc["nim-gamma-ft", "n"] == 100


def test_robustness_bars_carry_their_values(tmp_path):
    """Robust accuracies of ~1 % are invisible as bars: each bar is labelled with its value."""
    _suite(tmp_path, "nim-gamma-ft", 0.53, 0.009)
    _suite(tmp_path, "nim-gamma-de3", 0.42, 0.035, defense={"name": "de3", "sigma_255": 70})
    tn, table, _ = _load(tmp_path)
    fig = tn.plot_robustness(table, 8)
    labels = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert labels == [["53.0", "42.0"], ["0.9", "3.5"]]


def test_claims_are_not_held_or_inconclusive_when_the_records_say_so(tmp_path):
    de3 = {"name": "de3", "sigma_255": 50}
    _suite(tmp_path, "nim-gamma-ft", 0.95, 0.30)
    _suite(tmp_path, "nim-gamma-de3", 0.90, 0.31, defense=de3)  # within noise of plain
    _suite(tmp_path, "mae-de3", 0.85, 0.50, defense=de3, init="mae")
    _sweep(tmp_path, "nim-gamma-de3", "NIM-gamma", [(0, 0.9, 0.3), (50, 0.9, 0.3)], "nim-gamma")
    _sweep(tmp_path, "mae-de3", "MAE", [(0, 0.9, 0.3), (50, 0.9, 0.5)], "mae")
    tn, table, sweep = _load(tmp_path)
    verdicts = tn.claims(table, sweep, 8).set_index("claim")["verdict"]
    assert verdicts["de3_beats_plain"] == "inconclusive (within noise)"  # 31 vs 30 on 100 images
    assert verdicts["nim_beats_mae"] == "not held"  # MAE's De³ is 19 points more robust
    assert verdicts["sigma_tradeoff"] == "inconclusive (within noise)"  # neither clean falls nor robust rises
    assert verdicts["gamma_beats_fixed"] == "not run at this scale"  # no NIM-fixed sweep


def test_load_nim_names_the_snakemake_target_when_records_are_missing(tmp_path):
    from robust_mim.papers.nim import tables as tn
    from robust_mim.reporting.records import RecordsMissing

    with pytest.raises(RecordsMissing, match="01_nim_de3"):
        tn.load_nim(tmp_path, "unit")


def pd_isna(value) -> bool:
    return value != value  # NaN


def test_denoised_step_accepts_soft_targets():
    torch.manual_seed(0)
    step = build_step(FINETUNE, filled("finetune_method", {"name": "denoised"}), denoiser=tiny_mae())
    soft = torch.full((4, 10), 0.1)
    loss, metrics = step(tiny_classifier(), torch.rand(4, 3, 16, 16), soft)
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1


def test_de3_with_masking_reconstructs_every_patch_and_is_randomized():
    torch.manual_seed(0)
    defended, randomized = build_defense(filled("defense", {"name": "de3", "sigma_255": 0, "mask_ratio": 0.5}),
                                         tiny_classifier().eval(), tiny_mae())
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        a, b = defended.purify(x), defended.purify(x)
    assert randomized and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a, b)  # a fresh mask each call


# ----------------------------------------------------------------------------- norm-pix denoisers, the MAE baseline


def _zero_prediction_mae(norm_pix: bool = True) -> MaskedAutoencoder:
    """A norm-pix autoencoder whose decoder predicts 0: its reconstruction is each reference patch's mean."""
    mae = MaskedAutoencoder(vit_spec("vit_nano_patch4_16"), MEAN, STD, norm_pix_loss=norm_pix)
    nn.init.zeros_(mae.decoder_pred.weight), nn.init.zeros_(mae.decoder_pred.bias)
    return mae.eval()


def test_de3_unnormalises_a_norm_pix_denoiser_with_the_received_images_patches():
    torch.manual_seed(0)
    mae, clf = _zero_prediction_mae(), tiny_classifier().eval()
    x = torch.rand(3, 3, 16, 16) * 0.6 + 0.2
    patch_means = mae.patchify(x).mean(-1, keepdim=True).expand(-1, -1, 48)  # [N, L, p*p*3]
    defended, _ = build_defense(filled("defense", {"name": "de3", "sigma_255": 70}), clf, mae)
    with torch.no_grad():
        out = defended.purify(x)  # noise σ_test = 70/255 goes in; statistics come from x itself
    assert torch.allclose(mae.patchify(out), patch_means, atol=1e-5)
    masked, _ = build_defense(filled("defense", {"name": "de3", "sigma_255": 0, "mask_ratio": 0.75}), clf, mae)
    with torch.no_grad():
        assert torch.allclose(mae.patchify(masked.purify(x)), patch_means, atol=1e-5)


def test_denoised_finetuning_images_unnormalise_with_the_clean_images_patches():
    torch.manual_seed(0)
    mae, x = _zero_prediction_mae(), torch.rand(2, 3, 16, 16) * 0.6 + 0.2
    out = denoised_images(mae, x, 30 / 255)
    assert torch.allclose(mae.patchify(out), mae.patchify(x).mean(-1, keepdim=True).expand(-1, -1, 48), atol=1e-5)
    assert torch.all(_zero_prediction_mae(norm_pix=False).reconstruct(x) == 0)  # a pixel decoder is left as is


def test_mae_baseline_degradation_is_masking_and_its_sweep_varies_the_mask_ratio():
    from robust_mim.defenses import de3_degradation
    from robust_mim.papers.nim.objective import sigma_tradeoff

    assert de3_degradation({"name": "de3", "sigma_255": 0, "mask_ratio": 0.75}) == "mask"
    assert de3_degradation({"name": "de3", "sigma_255": 70}) == "noise"
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    rows = sigma_tradeoff(tiny_classifier().eval(), tiny_mae().eval(), x, y, [0, 50, 75, 100, 140], 8 / 255,
                          steps=1, eot_samples=2, batch_size=4, degradation="mask")
    assert sorted({r["mask_ratio"] for r in rows}) == [0.0, 0.5, 0.75]  # γ = v/100, γ >= 1 skipped
    assert all(r["sigma"] == 0 and r["degradation"] == "mask" for r in rows)
    assert {r["eot_samples"] for r in rows if r["mask_ratio"] > 0} == {2}  # masking is randomized: EOT
    with pytest.raises(ConfigError, match="degradation"):
        sigma_tradeoff(tiny_classifier(), tiny_mae(), x, y, [0], 0.0, steps=1, eot_samples=1, batch_size=4,
                       degradation="blur")


def test_standard_finetuning_accepts_the_denoiser_of_its_de3_defense():
    step = build_step(FINETUNE, filled("finetune_method", {"name": "standard"}), denoiser=tiny_mae())
    loss, _ = step(tiny_classifier(), torch.rand(2, 3, 16, 16), torch.tensor([1, 2]))
    assert torch.isfinite(loss)


def test_sweep_of_an_mae_baseline_is_plotted_against_its_mask_ratio(tmp_path):
    _sweep(tmp_path, "nim-gamma-de3", "NIM-gamma", [(0, 0.97, 0.05), (50, 0.80, 0.62)], "nim-gamma")
    rows = [r for g, c, a in [(0.0, 0.9, 0.0), (0.5, 0.7, 0.2), (0.75, 0.5, 0.3)]
            for r in ({"degradation": "mask", "sigma_255": 0.0, "mask_ratio": g, "eps": 0.0, "accuracy": c,
                       "n_examples": 100},
                      {"degradation": "mask", "sigma_255": 0.0, "mask_ratio": g, "eps": 8 / 255, "accuracy": a,
                       "n_examples": 100})]
    _write(tmp_path, "mae-de3", "sigma-sweep", rows, defense={"name": "de3", "sigma_255": 0, "mask_ratio": 0.75},
           init="mae", extra={"denoiser": "mae", "pretraining": "MAE"})
    tn, _, sweep = _load(tmp_path)
    mae = sweep[sweep["pretraining"] == "MAE"]
    assert list(mae["mask_ratio"]) == [0.0, 0.5, 0.75] and set(mae["degradation"]) == {"mask"}
    assert set(sweep.loc[sweep["pretraining"] == "NIM-gamma", "degradation"]) == {"noise"}
    assert set(tn.noise_sweep(sweep)["pretraining"]) == {"NIM-gamma"}  # σ_test claims never read mask rows
    fig = tn.plot_sigma_tradeoff(sweep, "tiny-scale")
    xlabels = [ax.get_xlabel() for ax in fig.axes]
    assert any(x.startswith("σ_test") for x in xlabels) and any(x.startswith("mask ratio") for x in xlabels)
    mask_ax = next(ax for ax in fig.axes if ax.get_xlabel().startswith("mask ratio"))
    assert {tuple(line.get_xdata()) for line in mask_ax.lines} == {(0.0, 0.5, 0.75)}  # MAE's points, by γ
    assert fig._suptitle.get_text() == "tiny-scale"
