"""The `robust-mim` console script: a fast --help, --spec from a file, one summary line per job log."""
import json
import re
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO
from robust_mim.cli import COMMAND_HELP, COMMAND_MODULES, COMMANDS, build_parser, main


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_top_level_help_imports_neither_torch_nor_any_command_module(argv):
    code = ("import sys\nfrom robust_mim.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m == 'torch' or m.startswith('robust_mim.cli.')))")
    out = _run(code)
    assert "LOADED []" in out
    if argv:
        assert "attack" in out and "finetune" in out and COMMAND_HELP["certify"][:40] in out.replace("\n  ", " ")


def test_an_unknown_command_is_one_usage_error_without_imports(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["no-such-command"])
    assert stop.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_help_lines_are_the_command_docstrings():
    build_parser()  # imports every command module
    assert set(COMMAND_HELP) == set(COMMAND_MODULES) == set(COMMANDS)
    for name, (fn, _) in COMMANDS.items():
        assert COMMAND_HELP[name] == fn.__doc__.splitlines()[0], name


def test_console_script_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"robust-mim": "robust_mim.cli:main"}


SPEC = {"profile": "test", "seed": 0, "models": {}, "notebooks": [], "headline_eps_255": 8}


def test_spec_may_be_a_json_file_and_the_log_gets_one_summary_line(tmp_path):
    spec_file, log = tmp_path / "spec.json", tmp_path / "job.log"
    spec_file.write_text(json.dumps(SPEC))
    main(["model-cards", "--spec", str(spec_file), "--log", str(log), "--results-dir", str(tmp_path),
          "--out-dir", str(tmp_path / "cards")])
    first = log.read_text().splitlines()[0]
    assert re.search(r"robust-mim model-cards: run -, profile test, config [0-9a-f]{12}$", first), first
    assert '"seed"' not in log.read_text()  # the spec itself is not echoed


@pytest.mark.parametrize("spec, message", [("missing.json", "--spec file '.*missing.json' does not exist"),
                                           ("{not json", "--spec is not valid JSON"),
                                           ("bad.json", "--spec file '.*bad.json' is not valid JSON")])
def test_a_bad_spec_is_one_error_line(tmp_path, capsys, spec, message):
    (tmp_path / "bad.json").write_text("{oops")
    spec = spec if spec.startswith("{") else str(tmp_path / spec)
    rc = main(["claims", "--spec", spec, "--results-root", str(tmp_path), "--out", str(tmp_path / "c.md")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert re.match(f"robust_mim: error: {message}", err), err
