"""Every path and id a rule pastes into a shell command is shell-quoted (``{x:q}``), so an odd path
(a space, a backtick) can neither break a job nor run a command. Ids are also restricted by the
schema (tests/test_config.py); this is the second line of defence."""
import re

from conftest import REPO

UNQUOTED_OK = {"params.launcher", "params.flags", "threads", "resources.gpu"}  # a command, pre-quoted flags, ints


def _shell_fields(text: str) -> list[str]:
    fields, in_shell = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("shell:"):
            in_shell = True
        elif in_shell and stripped.startswith('"'):
            fields += re.findall(r"\{([^{}]+)\}", stripped)
        else:
            in_shell = False
    return fields


def test_every_shell_field_is_quoted_or_a_plain_number():
    unquoted = [(p.name, f) for p in sorted((REPO / "rules").glob("*.smk")) for f in _shell_fields(p.read_text())
                if not f.endswith(":q") and f not in UNQUOTED_OK]
    assert unquoted == []


def test_optional_flags_quote_their_paths():
    namespace = {}
    source = (REPO / "rules" / "common.smk").read_text()
    exec(re.search(r"def optional_flags.*?(?=\n\n\n)", source, re.S).group(0), {"shlex": __import__("shlex")}, namespace)
    flags = namespace["optional_flags"]({"vq": "results/a b/`x`.safetensors"}, ["denoiser", "vq"])
    assert flags == "--vq 'results/a b/`x`.safetensors'"
