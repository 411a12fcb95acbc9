"""Entry points the Snakemake rules call: ``python -m robust_mim.cli <command> --spec JSON ...``.

Every command receives the resolved slice of the configuration as one JSON ``--spec`` (built
by ``rules/common.smk``) plus input/output paths, sets torch threads from the rule's
``threads``, and calls library functions. A user-caused error (bad config, missing data,
corrupt checkpoint) prints ``robust_mim: error: <one line>`` and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from robust_mim.errors import ConfigError, RobustMimError

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], Callable[[argparse.ArgumentParser], None]]] = {}
# command → the module of robust_mim.cli that registers it. A job imports only its command's module:
# the others pull in pandas, scipy, ART... (about 1.5 s of imports in each of a pipeline's ~100 jobs)
COMMAND_MODULES: dict[str, str] = {
    "pretrain": "train", "finetune": "train", "attack": "evaluate", "sigma-sweep": "nim",
    "attack-adaptive": "mimir", "certify": "dmae", "pretrain-pretext": "chen", "pgd-eval": "chen",
    "train-vq": "dat", "corruption-eval": "dat", "model-cards": "report", "claims": "report",
}


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args)`` as a subcommand whose extra arguments ``add_args`` declares."""
    def register(fn: Callable[[argparse.Namespace], None]):
        COMMANDS[name] = (fn, add_args)
        return fn
    return register


def _spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--spec is not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError("--spec must be a JSON object")
    return spec


def _register(argv: list[str] | None) -> None:
    """Import the module of the command ``argv`` names (all of them without argv, for ``--help`` or an unknown name)."""
    import importlib

    name = argv[0] if argv else None
    modules = [COMMAND_MODULES[name]] if name in COMMAND_MODULES else sorted(set(COMMAND_MODULES.values()))
    for module in modules:
        importlib.import_module(f"robust_mim.cli.{module}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given the command line ``argv``, only its command's module is imported."""
    _register(argv)
    parser = argparse.ArgumentParser(prog="python -m robust_mim.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=(fn.__doc__ or "").splitlines()[0])
        p.add_argument("--spec", type=_spec, required=True, help="resolved configuration as JSON")
        p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the rule's threads)")
        p.add_argument("--log", default=None, help="append progress lines to this file (default: stdout)")
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(argv).parse_args(argv)
        import torch

        torch.set_num_threads(max(1, args.threads))
        args.func(args)
    except RobustMimError as exc:
        line = f"robust_mim: error: {exc}"
        print(line, file=sys.stderr)
        log_path = getattr(locals().get("args"), "log", None)
        if log_path:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        return 2
    return 0
