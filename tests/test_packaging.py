import re
import tomllib

import yaml

from conftest import REPO

ALIASES = {"pytorch": "torch"}


def _name(req: str) -> str:
    return ALIASES.get(n := re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower(), n)


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda = {_name(d) for d in env if isinstance(d, str)} - {"python", "pip"}
    pip = {_name(d) for block in env if isinstance(block, dict) for d in block["pip"] if not d.startswith("-e")}
    assert conda | pip == pip_names


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make all" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
