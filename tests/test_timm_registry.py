"""The project's ViT names work with timm.create_model once a name is taken from `robust_mim.models`."""
import pytest
import timm
import torch

from robust_mim.errors import CheckpointError
from robust_mim.models import VITS, build_vit_encoder, vit_spec  # the first name taken registers them with timm

OURS = [n for n in VITS.names() if n != "vit_base_patch16_224"]  # that name is timm's own model


@pytest.mark.parametrize("name", [n for n in OURS if vit_spec(n).embed_dim <= 64])
def test_create_model_builds_our_encoder_with_a_head(name):
    spec = vit_spec(name)
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.rand(2, 3, spec.img_size, spec.img_size)
    assert model(x).shape == (2, 10)
    encoder = build_vit_encoder(spec).eval()  # the backbone of our classifiers: its weights load one-to-one
    missing, unexpected = model.load_state_dict(encoder.state_dict(), strict=False)
    assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected
    with torch.no_grad():
        assert torch.allclose(model.forward_head(model.forward_features(x), pre_logits=True), encoder(x), atol=1e-6)


def test_every_name_is_listed_by_timm_and_timms_own_model_is_left_alone():
    assert set(OURS) <= set(timm.list_models())
    assert timm.create_model("vit_base_patch16_224", pretrained=False).global_pool == "token"


def test_default_head_and_no_published_weights():
    assert timm.create_model("vit_nano_patch4_16").num_classes == 1000
    with pytest.raises(CheckpointError, match="load_model"):
        timm.create_model("vit_nano_patch4_16", pretrained=True)
