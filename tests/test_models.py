import pytest
import torch

from robust_mim.errors import CheckpointError, ConfigError
from robust_mim.models import ImageClassifier, MaskedAutoencoder, build_vit_encoder, load_encoder, vit_spec

SPEC = vit_spec("vit_nano_patch4_16")


def _mae():
    torch.manual_seed(0)
    return MaskedAutoencoder(SPEC, [0.5] * 3, [0.5] * 3)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.75])
def test_masking_keeps_the_configured_fraction_and_partitions_tokens(ratio):
    tokens = torch.randn(5, 16, 8)
    kept, mask, ids_restore = MaskedAutoencoder.random_masking(tokens, ratio)
    assert kept.shape == (5, round(16 * (1 - ratio)), 8)
    assert torch.all(mask.sum(1) == round(16 * ratio))
    for n in range(5):  # kept tokens are exactly the mask==0 positions
        kept_rows = {tuple(r.tolist()) for r in kept[n]}
        assert kept_rows == {tuple(tokens[n, i].tolist()) for i in range(16) if mask[n, i] == 0}
        assert sorted(ids_restore[n].tolist()) == list(range(16))


def test_patchify_roundtrip_and_reconstruction_range():
    mae, x = _mae(), torch.rand(2, 3, 16, 16)
    assert torch.equal(mae.unpatchify(mae.patchify(x)), x)
    out = mae.reconstruct(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_unmasked_encoder_equals_the_timm_forward():
    mae, x = _mae(), torch.rand(3, 3, 16, 16)
    latent, _, ids = mae.forward_encoder(x, 0.0)
    ref = mae.encoder.forward_features(mae.normalize(x))
    tokens = torch.gather(latent[:, 1:], 1, ids[:, :, None].expand(-1, -1, latent.shape[2]))
    assert torch.allclose(tokens, ref[:, 1:], atol=1e-5)


def test_masked_loss_only_counts_masked_patches():
    mae, x = _mae(), torch.rand(2, 3, 16, 16)
    pred = mae.patchify(x).clone()
    mask = torch.zeros(2, 16)
    mask[:, :4] = 1
    pred[:, 4:] += 1.0  # wrong only on visible patches
    assert mae.forward_loss(x, pred, mask, "masked").item() == 0.0
    assert mae.forward_loss(x, pred, mask, "all").item() > 0.5


def test_classifier_loads_a_pretrained_encoder_strictly():
    mae = _mae()
    clf = ImageClassifier(build_vit_encoder(SPEC), SPEC.embed_dim, 10, [0.5] * 3, [0.5] * 3)
    load_encoder(clf, mae.state_dict())
    assert torch.equal(clf.backbone.pos_embed, mae.encoder.pos_embed)
    other = vit_spec("vit_micro_patch4_16")
    big = ImageClassifier(build_vit_encoder(other), other.embed_dim, 10, [0.5] * 3, [0.5] * 3)
    with pytest.raises(CheckpointError, match="shape mismatch .*pos_embed|missing .*blocks"):
        load_encoder(big, mae.state_dict())
    with pytest.raises(CheckpointError, match="missing"):
        load_encoder(clf, {k: v for k, v in mae.state_dict().items() if "blocks.0" not in k})


def test_classifier_normalises_inside_and_unknown_arch_is_a_config_error():
    clf = ImageClassifier(build_vit_encoder(SPEC), SPEC.embed_dim, 10, [0.5] * 3, [0.25] * 3)
    assert torch.allclose(clf.normalize(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="unknown model 'vit_huge'.*vit_micro_patch4_16"):
        vit_spec("vit_huge")


def _official_sincos(dim, grid):
    """MAE's util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True), in numpy."""
    import numpy as np

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), 0)
    emb = np.concatenate([one_axis(dim // 2, g[0]), one_axis(dim // 2, g[1])], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, dim]), emb], axis=0)).float()


def test_position_embeddings_are_the_official_fixed_sin_cos_tables():
    mae, grid = _mae(), SPEC.img_size // SPEC.patch_size
    assert torch.allclose(mae.encoder.pos_embed[0], _official_sincos(SPEC.embed_dim, grid), atol=1e-6)
    assert torch.allclose(mae.decoder_pos_embed[0], _official_sincos(SPEC.decoder_dim, grid), atol=1e-6)
    trainable = {n for n, p in mae.named_parameters() if p.requires_grad}
    assert "encoder.pos_embed" not in trainable and "decoder_pos_embed" not in trainable
    clf = ImageClassifier(build_vit_encoder(SPEC), SPEC.embed_dim, 10, [0.5] * 3, [0.5] * 3)
    load_encoder(clf, mae.state_dict())  # fine-tuning trains its copy, as the official FINETUNE recipe
    assert clf.backbone.pos_embed.requires_grad


def test_decoder_blocks_have_qkv_bias_as_the_official_mae():
    mae = _mae()
    assert all(b.attn.qkv.bias is not None for b in mae.decoder_blocks)
    assert mae.decoder_norm.eps == 1e-6


def test_norm_pix_prediction_is_unnormalised_with_the_reference_patches():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(SPEC, [0.5] * 3, [0.5] * 3, norm_pix_loss=True)
    x, reference = torch.rand(2, 3, 16, 16) * 0.2 + 0.4, torch.rand(2, 3, 16, 16) * 0.5 + 0.25
    t = mae.patchify(reference)
    mean, std = t.mean(-1, keepdim=True), (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    unit = (t - mean) / std  # a decoder that predicts the normalised reference exactly
    assert torch.allclose(mae.to_pixels(unit, reference), t, atol=1e-5)
    torch.nn.init.zeros_(mae.decoder_pred.weight), torch.nn.init.zeros_(mae.decoder_pred.bias)  # predicts 0
    out = mae.reconstruct(x, reference=reference)  # → each patch's mean of the reference
    assert torch.allclose(mae.patchify(out), mean.expand_as(t), atol=1e-5)
