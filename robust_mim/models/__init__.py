"""Models: registered ViTs (also with timm), the MIM encoder-decoder, classifiers on [0, 1] inputs."""
from robust_mim.models.classifier import ImageClassifier, Normalize, load_encoder
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import VITS, ViTSpec, build_vit_encoder, vit_spec
from robust_mim.models import timm_models  # noqa: F401 - registers the VITS names with timm

__all__ = ["ImageClassifier", "Normalize", "load_encoder", "MaskedAutoencoder", "VITS", "ViTSpec",
           "build_vit_encoder", "vit_spec"]
