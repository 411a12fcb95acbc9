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


def _locked() -> dict[str, str]:
    """requirements.lock as {normalised name: exact version}."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier  # exactly one clause: ==version
            assert spec.operator == "==", f"{line!r} is not an exact pin"
            pins[_canonical(req.name)] = spec.version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_dependency_within_pyproject_ranges():
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(line)
        name = _canonical(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not in requirements.lock"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"requirements.lock pins {req.name}=={locked[name]}, outside pyproject's '{req.specifier}'"


def test_lock_pins_the_torch_a_fresh_machine_installs_without_a_download():
    locked = _locked()
    assert (locked["torch"], locked["torchvision"]) == ("2.14.1", "0.29.1")


def test_make_installs_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.lock" in makefile and "--no-deps -e ." in makefile


def test_each_papers_schema_ships_with_the_package(repo):
    """The workflow reads robust_mim/papers/<key>/schema.yaml from the installed package: package data must name it."""
    import fnmatch
    import tomllib

    data = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["robust_mim"]
    schemas = [str(p.relative_to(repo / "robust_mim")) for p in (repo / "robust_mim" / "papers").glob("*/schema.yaml")]
    assert schemas and all(any(fnmatch.fnmatch(s, pattern) for pattern in data) for s in schemas)
