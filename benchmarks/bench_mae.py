"""MAE pretraining: the encoder on the visible tokens only (mask 0.75) vs on every token (mask 0).

He et al. (2022) run the encoder on the 25% visible patches only, which is where MAE's
pretraining speed comes from. Same `MaskedAutoencoder`, same batch, same decoder (which always
sees every patch); only the mask ratio differs. Timed units, interleaved:

- ``encoder``: ``forward_encoder`` + backward of a scalar on its output (the encoder's share of
  a training step);
- ``step``: the whole training step — encoder, decoder, loss, backward, AdamW.

Ratio = time at mask 0 ÷ time at mask 0.75 (> 1: skipping masked tokens pays). Beside it: the
naive expectation 1 / (1 − mask ratio) = 4, the token ratio (1 + L) / (1 + L_keep) (class token
included), and the forward-FLOP ratio counted by ``torch.utils.flop_counter`` — the speed-up a
compute-bound machine would show. Small models on a CPU are partly overhead-bound, so the
measured ratio sits below the FLOP ratio; the gap is the fixed per-op cost.

    python -m benchmarks.bench_mae --out benchmarks/results/mae.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import interleaved_times, machine_info, median, spread
from robust_mim.engine import adamw
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import vit_spec

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
DEFAULT_CONFIGS = "vit_micro_patch4_16:64,vit_tiny_patch4_32:16"  # arch:batch (smoke model; ViT-Tiny/4 at 32x32)


def encoder_unit(mae: MaskedAutoencoder, x: torch.Tensor, mask_ratio: float) -> Callable[[], None]:
    """Forward the encoder on the visible tokens and backpropagate a scalar of its output."""
    def run() -> None:
        mae.zero_grad(set_to_none=True)
        latent, _, _ = mae.forward_encoder(x, mask_ratio)  # [N, 1+L_keep, D]
        latent.square().mean().backward()
    return run


def step_unit(mae: MaskedAutoencoder, x: torch.Tensor, mask_ratio: float) -> Callable[[], None]:
    """One full MAE training step (loss on masked patches; on all patches when nothing is masked)."""
    opt = adamw(mae, 1e-4, 0.05, (0.9, 0.95))

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss, *_ = mae(x, x, mask_ratio=mask_ratio)
        loss.backward()
        opt.step()
    return run


def counted_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def flop_ratios(mae: MaskedAutoencoder, x: torch.Tensor, mask_ratio: float) -> dict[str, float]:
    """Forward FLOPs at mask 0 ÷ at ``mask_ratio``, for the encoder and for encoder + decoder."""
    with torch.no_grad():
        enc = [counted_flops(lambda r=r: mae.forward_encoder(x, r)) for r in (0.0, mask_ratio)]
        full = [counted_flops(lambda r=r: mae(x, x, mask_ratio=r)) for r in (0.0, mask_ratio)]
    return {"encoder_flop_ratio": enc[0] / enc[1], "step_flop_ratio": full[0] / full[1],
            "encoder_gflops_per_image_mask0": enc[0] / x.shape[0] / 1e9}


def bench_config(arch: str, batch: int, args: argparse.Namespace) -> dict:
    """Interleaved encoder and step timings at mask 0 and ``args.mask_ratio`` for one architecture."""
    spec = vit_spec(arch)
    torch.manual_seed(args.seed)
    mae = MaskedAutoencoder(spec, MEAN, STD).train()
    x = torch.rand(batch, 3, spec.img_size, spec.img_size)  # [B, 3, S, S]
    r = args.mask_ratio
    units = {"encoder mask0": encoder_unit(mae, x, 0.0), f"encoder mask{r:g}": encoder_unit(mae, x, r),
             "step mask0": step_unit(mae, x, 0.0), f"step mask{r:g}": step_unit(mae, x, r)}
    times = interleaved_times(units, args.repeats, args.warmup)
    rows = {name: {"median_s": median(t), "runs_s": [round(v, 5) for v in t], "spread": round(spread(t), 3),
                   "images_per_s": batch / median(t)} for name, t in times.items()}
    patches = (spec.img_size // spec.patch_size) ** 2
    keep = int(round(patches * (1 - r)))
    return {"arch": arch, "batch_size": batch, "patches": patches, "visible_patches": keep, "results": rows,
            "encoder_ratio": rows["encoder mask0"]["median_s"] / rows[f"encoder mask{r:g}"]["median_s"],
            "step_ratio": rows["step mask0"]["median_s"] / rows[f"step mask{r:g}"]["median_s"],
            "naive_expected_ratio": 1 / (1 - r), "token_ratio": (1 + patches) / (1 + keep),
            **flop_ratios(mae, x, r)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated arch:batch pairs")
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mae.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [c.split(":") for c in args.configs.split(",") if c.strip()]
    runs = [bench_config(arch.strip(), int(batch), args) for arch, batch in pairs]
    result = {"benchmark": "mae_visible_tokens", "mask_ratio": args.mask_ratio, "repeats": args.repeats,
              "warmup": args.warmup, "device": "cpu", "runs": runs,
              "ratio": runs[-1]["encoder_ratio"], **machine_info()}
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    r = result["mask_ratio"]
    print(f"MAE: encoder on visible tokens (mask {r:g}) vs all tokens (mask 0); "
          f"{result['torch_threads']} threads, load {result['load_average']}")
    print(f"  {'arch':<22}{'batch':>6}{'unit':>9}{'mask0 ms':>10}{f'mask{r:g} ms':>12}{'ratio':>7}{'FLOP ratio':>12}")
    for run in result["runs"]:
        res = run["results"]
        for unit, flop in (("encoder", run["encoder_flop_ratio"]), ("step", run["step_flop_ratio"])):
            full, masked = res[f"{unit} mask0"]["median_s"], res[f"{unit} mask{r:g}"]["median_s"]
            print(f"  {run['arch']:<22}{run['batch_size']:>6}{unit:>9}{1e3 * full:>10.1f}{1e3 * masked:>12.1f}"
                  f"{full / masked:>7.2f}{flop:>12.2f}")
        print(f"  {'':<22}naive 1/(1-mask) = {run['naive_expected_ratio']:.2f}, tokens (1+L)/(1+L_keep) = "
              f"{run['token_ratio']:.2f} ({run['patches']} patches, {run['visible_patches']} visible)")


if __name__ == "__main__":
    main()
