"""The registry of papers: one folder per paper under ``robust_mim/papers/``, found by looking.

Each folder ``robust_mim/papers/<key>/`` is one paper. Its ``__init__.py`` defines ``PAPER``, a `Paper`
(torch-free: the workflow reads it while parsing); beside it live what only that paper needs::

    papers/<key>/
      __init__.py      PAPER = Paper(key, title, number, notebook, commands, ...)
      schema.yaml      JSON schema of the profile's ``<key>:`` section (optional)
      objective.py     its training objectives / methods, registered in robust_mim.objectives (optional)
      commands.py      its pipeline commands (``robust-mim <command>``), registered with robust_mim.cli.command
      tables.py        its tables from records, CLAIM / PAPER_NUMBER / PAPER_SCALE and ``judge``
      deviations.py    ROWS: what the official code does differently, and why
    rules/<key>.smk    its Snakemake rules beyond the shared stages
    notebooks/<notebook>.ipynb

Everything that enumerates papers (the rule files the Snakefile includes, the CLI's commands, the
report's categories, the ``papers`` enum of the schema, the claims table, the leaderboard's paper
column) loops over `PAPERS`; adding a paper edits no shared file (CONTRIBUTING.md, "Adding a paper").
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from robust_mim.errors import ConfigError

PACKAGE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Paper:
    """One paper of the companion. Module names are relative to the paper's package.

    Args:
        key: the folder name; the profile's section, the ``papers`` value of runs, the deviation key.
        title: "NIM / De³ (You et al., NeurIPS 2023)" — how tables name it.
        number: its position (notebook ``NN_``, report category ``"<number> <short>"``).
        short: a short name for report categories, e.g. "NIM - De3".
        notebook: the notebook's stem under notebooks/, e.g. ``01_nim_de3``.
        commands: command name → its one-line help (the first docstring line); registered by ``commands.py``.
        objectives: modules that register training objectives/methods (imported before a step is built).
        run_sections: the paper's own sections of training runs (e.g. ``"chen.pretrain"``) → the key of a
            fine-tuning run that names one of them (``"init"``, ``"vq"``); ids must not clash with shared ones.
        checks: the paper has ``checks.py`` with ``check_config(config)`` (cross-key checks, torch-free).
    """

    key: str
    title: str
    number: int
    short: str
    notebook: str
    commands: dict[str, str] = field(default_factory=dict)
    objectives: tuple[str, ...] = ()
    run_sections: dict[str, str] = field(default_factory=dict)
    checks: bool = False

    @property
    def package(self) -> str:
        return f"{__name__}.{self.key}"

    @property
    def category(self) -> str:
        """Report category of the paper's figures, tables and notebook."""
        return f"{self.number} {self.short}"

    @property
    def rules(self) -> str:
        """Its Snakemake rule file, relative to the repository root."""
        return f"rules/{self.key}.smk"

    @property
    def schema_path(self) -> Path:
        """JSON schema (YAML) of the profile's ``<key>:`` section; may be absent."""
        return PACKAGE_DIR / self.key / "schema.yaml"

    def module(self, name: str) -> ModuleType:
        """Import one of the paper's modules, e.g. ``module("tables")``."""
        return importlib.import_module(f"{self.package}.{name}")


def _discover() -> dict[str, Paper]:
    found = []
    for info in pkgutil.iter_modules([str(PACKAGE_DIR)]):
        if info.ispkg:
            paper = getattr(importlib.import_module(f"{__name__}.{info.name}"), "PAPER", None)
            if not isinstance(paper, Paper) or paper.key != info.name:
                raise ConfigError(f"robust_mim/papers/{info.name}/__init__.py must define PAPER = Paper(key='{info.name}', ...)")
            found.append(paper)
    return {p.key: p for p in sorted(found, key=lambda p: (p.number, p.key))}


PAPERS: dict[str, Paper] = _discover()


def paper(key: str) -> Paper:
    """The paper ``key``; one ConfigError line naming the known ones otherwise."""
    if key not in PAPERS:
        raise ConfigError(f"unknown paper '{key}' (known: {', '.join(PAPERS)})")
    return PAPERS[key]


def command_modules() -> dict[str, str]:
    """Pipeline command → the module that registers it, for every paper."""
    return {name: f"{p.package}.commands" for p in PAPERS.values() for name in p.commands}


def command_help() -> dict[str, str]:
    """Pipeline command → its one-line help, for every paper."""
    return {name: line for p in PAPERS.values() for name, line in p.commands.items()}


def register_objectives() -> None:
    """Import every paper's objective modules, so their objectives/methods are in the registries."""
    for p in PAPERS.values():
        for name in p.objectives:
            p.module(name)


__all__ = ["PAPERS", "Paper", "command_help", "command_modules", "paper", "register_objectives"]
