"""Entry points the Snakemake rules call: ``robust-mim <command> --spec JSON|FILE ...`` (or ``python -m robust_mim.cli``).

Every command receives the resolved slice of the configuration as one ``--spec`` (JSON text
built by ``rules/common.smk``, or the path of a JSON file) plus input/output paths, sets torch
threads from the rule's ``threads``, logs one line naming the command, run and config hash,
and calls library functions. A user-caused error (bad config, missing data, corrupt
checkpoint) prints ``robust_mim: error: <one line>`` and exits with status 2.

``robust-mim --help`` lists the commands without importing any of them (no torch: instant).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from robust_mim.errors import ConfigError, RobustMimError
from robust_mim.papers import command_help, command_modules

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], Callable[[argparse.ArgumentParser], None]]] = {}
# command → the module of robust_mim.cli that registers it. A job imports only its command's module:
# the others pull in pandas, scipy, ART... (about 1.5 s of imports in each of a pipeline's ~100 jobs)
# command → the module that registers it: the shared commands here, each paper's from its folder
# (robust_mim.papers). A job imports only its command's module: the others pull in pandas, scipy,
# ART... (about 1.5 s of imports in each of a pipeline's ~100 jobs)
SHARED_COMMAND_MODULES: dict[str, str] = {
    "pretrain": "robust_mim.cli.train", "finetune": "robust_mim.cli.train", "attack": "robust_mim.cli.evaluate",
    "model-cards": "robust_mim.cli.report", "claims": "robust_mim.cli.report",
}
# command → the first line of its docstring, so that `robust-mim --help` imports no command module
# (they import torch: seconds). tests/test_cli.py checks these lines against the docstrings.
SHARED_COMMAND_HELP: dict[str, str] = {
    "pretrain": "Pretrain a masked autoencoder with the run's objective (MAE, NIM, DMAE, MIMIR).",
    "finetune": "Train a classifier, from scratch or from a pretrained encoder, with the run's method.",
    "attack": "Attack one (possibly defended) classifier with the configured suite; write records.",
    "model-cards": "Write one RobustBench-style model card per trained classifier of the profile (atomically).",
    "claims": "Write the claims table (markdown): each paper's headline claim judged from every profile's records.",
}
COMMAND_MODULES: dict[str, str] = {**SHARED_COMMAND_MODULES, **command_modules()}
COMMAND_HELP: dict[str, str] = {**SHARED_COMMAND_HELP, **command_help()}
PROG = "robust-mim"
DESCRIPTION = "robust_mim's pipeline commands (the Snakemake rules run them; each takes --spec JSON|FILE)."


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args)`` as a subcommand whose extra arguments ``add_args`` declares."""
    def register(fn: Callable[[argparse.Namespace], None]):
        COMMANDS[name] = (fn, add_args)
        return fn
    return register


def _spec(text: str) -> dict:
    """``--spec``: JSON text (starting with ``{``) or the path of a JSON file holding it."""
    where = "--spec"
    if not text.lstrip().startswith("{"):
        if not Path(text).is_file():
            raise ConfigError(f"--spec file '{text}' does not exist (give JSON text or a .json file)")
        where, text = f"--spec file '{text}'", Path(text).read_text(encoding="utf-8")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a JSON object")
    return spec


def _register(argv: list[str] | None) -> None:
    """Import the module of the command ``argv`` names (all of them without argv, for ``--help`` or an unknown name)."""
    import importlib

    name = argv[0] if argv else None
    modules = [COMMAND_MODULES[name]] if name in COMMAND_MODULES else sorted(set(COMMAND_MODULES.values()))
    for module in modules:
        importlib.import_module(module)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given the command line ``argv``, only its command's module is imported."""
    _register(argv)
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=(fn.__doc__ or "").splitlines()[0])
        p.add_argument("--spec", required=True, help="resolved configuration: JSON text or a .json file")
        p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the rule's threads)")
        p.add_argument("--log", default=None, help="append progress lines to this file (default: stdout)")
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def overview_parser() -> argparse.ArgumentParser:
    """The top-level parser for ``--help``, no arguments or an unknown command: names and one-line
    helps from `COMMAND_HELP`, without importing any command module."""
    from robust_mim._version import __version__

    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     epilog=f"'{PROG} <command> --help' shows a command's arguments.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name in sorted(COMMAND_HELP):
        sub.add_parser(name, help=COMMAND_HELP[name])
    return parser


def _log_start(args: argparse.Namespace) -> None:
    """One line at the top of the job's log: command, run id, config hash (not the whole spec)."""
    if os.environ.get("RANK", "0") != "0":  # torchrun: the main process speaks for all
        return
    from robust_mim.cli.common import make_logger
    from robust_mim.records import config_hash

    run_id = (args.spec.get("run") or {}).get("id") or getattr(args, "model_id", None) or "-"
    make_logger(args.log)(f"robust-mim {args.command}: run {run_id}, profile {args.spec.get('profile', '-')}, "
                          f"config {config_hash(args.spec)}")


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        if not argv or argv[0] not in COMMAND_MODULES:
            overview_parser().parse_args(argv)  # prints the help or the error, and exits
        args = build_parser(argv).parse_args(argv)
        args.spec = _spec(args.spec)  # here, not as argparse's type: its errors would lose our one line
        import torch

        torch.set_num_threads(max(1, args.threads))
        _log_start(args)
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
