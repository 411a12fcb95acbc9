"""What a weights file holds, and strict loading that says in one line why a file does not fit.

The training commands write MAE weights (``pretrain``: ``encoder.*`` plus ``decoder_*`` and
``mask_token``), classifiers (``finetune``: ``backbone.*`` and ``head.*``), bare encoders
(``pretrain-pretext``: ``encoder.*`` only) and VQ autoencoders (``train-vq``: ``quantizer.*``).
A file given where another kind is expected, or one of another architecture, is a
`CheckpointError` naming the file, what it holds and what to pass instead.
"""
from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from robust_mim.errors import CheckpointError
from robust_mim.io import load_weights

HOLDS = {
    "mae": "MAE pretraining weights (decoder keys)",
    "encoder": "a bare pretrained encoder (encoder.* keys only)",
    "classifier": "classifier weights (backbone.* and head.* keys)",
    "vq": "a VQ autoencoder (quantizer keys)",
    "unknown": "weights of no model robust_mim trains",
}
# expected kind -> (kinds accepted, what it is, what to pass)
EXPECTED = {
    "classifier": (("classifier",), "a classifier", "results/<profile>/finetune/<id>/model.safetensors"),
    "mae": (("mae",), "an MAE", "results/<profile>/pretrain/<id>/model.safetensors"),
    "encoder": (("mae", "encoder"), "a pretrained encoder", "results/<profile>/pretrain/<id>/model.safetensors"),
    "vq": (("vq",), "a VQ autoencoder", "results/<profile>/dat/vq/<id>/model.safetensors"),
}


def weights_kind(state: Mapping[str, Tensor]) -> str:
    """``mae``, ``encoder``, ``classifier``, ``vq`` or ``unknown``, from the state dict's keys."""
    keys = list(state)
    if any(k.startswith("quantizer.") for k in keys):
        return "vq"
    if "mask_token" in keys or any(k.startswith("decoder_") for k in keys):
        return "mae"
    if keys and all(k.startswith("encoder.") for k in keys):
        return "encoder"
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("head.") for k in keys):
        return "classifier"
    return "unknown"


def check_kind(state: Mapping[str, Tensor], path: str, expected: str) -> None:
    """Raise a CheckpointError unless ``state`` (read from ``path``) holds ``expected`` weights."""
    accepted, what, where = EXPECTED[expected]
    kind = weights_kind(state)
    if kind not in accepted:
        raise CheckpointError(f"'{path}' holds {HOLDS[kind]}, not {what}; pass {where}")


def read_weights(path: str, expected: str) -> dict[str, Tensor]:
    """The state dict in the safetensors file ``path``, checked to hold ``expected`` weights (a key of EXPECTED)."""
    state = load_weights(path)
    check_kind(state, path, expected)
    return state


def mismatch(target: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
    """How ``state`` differs from a model's ``target`` state dict in one phrase (None if it fits exactly)."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(k for k in set(target) & set(state) if target[k].shape != state[k].shape)
    if not (missing or unexpected or shapes):
        return None
    file_vit, model_vit = vit_summary(state), vit_summary(target)
    parts = [f"file ViT {file_vit} vs model ViT {model_vit}"] if file_vit and model_vit and file_vit != model_vit else []
    if shapes:
        k = shapes[0]
        parts.append(f"shape mismatch: {k} is {list(state[k].shape)} in the file, {list(target[k].shape)} in the model"
                     + (f" (+{len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
    parts += [f"{name} {_few(keys)}" for name, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    return "; ".join(parts)


def vit_summary(state: Mapping[str, Tensor]) -> str | None:
    """``(width 64, 4 blocks, 17 tokens)`` from a ViT state dict's position embedding (None if it has none)."""
    pos = next((k for k in state if k.endswith("pos_embed") and not k.startswith("decoder")), None)
    if pos is None:
        return None
    prefix = pos[: -len("pos_embed")]
    blocks = {k[len(prefix):].split(".")[1] for k in state if k.startswith(prefix + "blocks.")}
    return f"(width {state[pos].shape[-1]}, {len(blocks)} blocks, {state[pos].shape[1]} tokens)"


def load_strict(model: nn.Module, path: str, expected: str, arch: str) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a file of another kind or architecture is one CheckpointError line.

    Args:
        expected: what the file must hold (a key of EXPECTED: ``classifier``, ``mae``).
        arch: the configured architecture, named in the message (e.g. ``model.arch vit_nano_patch4_16``).
    """
    state = read_weights(path, expected)
    target = model.state_dict()
    diff = mismatch(target, state)
    if diff and _only_head_differs(target, state):
        raise CheckpointError(f"'{path}' is a classifier over {state['head.bias'].shape[0]} classes, but the data "
                              f"has {target['head.bias'].shape[0]}; pass one trained on this profile's data")
    if diff:
        raise CheckpointError(f"'{path}' holds {EXPECTED[expected][1]} of another architecture than the configured "
                              f"{arch} ({diff}); pass one trained with this profile's model")
    model.load_state_dict(state, strict=True)
    return model


def _only_head_differs(target: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> bool:
    """Same keys, and only the classification head's shapes differ (another number of classes)."""
    if set(target) != set(state) or "head.bias" not in target:
        return False
    return all(k.startswith("head.") for k in target if target[k].shape != state[k].shape)


def _few(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + "]" + more
