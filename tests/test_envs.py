"""envs/: every conda environment file is used by a rule, lists what that rule's code imports, and pins
what pyproject.toml pins.

Snakemake gives an environment only to script: rules (it refuses ``conda:`` on run: rules, which run in
Snakemake's own environment, setup.sh's .venv). What a rule imports is read from its script and every
likeness module the script reaches (imports inside functions included). The slow test builds each
environment as a venv from exactly its packages (pip, from the package registry; conda names mapped to
their PyPI names) and imports those modules there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflow"
RULES = [REPO / "Snakefile", *sorted((WORKFLOW / "rules").glob("*.smk"))]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
# Conda package names whose PyPI name differs (the test installs from PyPI).
CONDA_TO_PYPI = {"py-opencv": "opencv-python-headless"}
# The tools a conda file lists besides packages: the interpreter and its installer.
TOOLS = {"python", "pip"}
# Snakemake's script preamble makes its own package importable inside the environment.
PROVIDED_BY_SNAKEMAKE = {"snakemake"}


def _name(requirement: str) -> str:
    """A distribution's normalised name (PEP 503), without extras."""
    return re.sub(r"[-_.]+", "-", requirement.split("[")[0]).lower()


def env_packages(env_file: Path) -> dict[str, str]:
    """PyPI name -> pinned version of every package an environment file lists (tools excluded)."""
    spec = yaml.safe_load(env_file.read_text())
    pins: dict[str, str] = {}
    for entry in spec["dependencies"]:
        if isinstance(entry, dict):  # the pip: section
            for requirement in entry["pip"]:
                name, _, version = requirement.partition("==")
                pins[_name(name.strip())] = version.strip()
        else:
            name, _, version = entry.partition("=")
            name = _name(CONDA_TO_PYPI.get(name.strip(), name.strip()))
            if name not in TOOLS:
                pins[name] = version.strip().lstrip("=")
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return {_name(name.strip()): version.strip() for name, _, version in (r.partition("==") for r in requirements)}


def rules_using(env_file: Path) -> dict[str, Path]:
    """Rule name -> its script, for every rule whose ``conda:`` names ``env_file``."""
    found: dict[str, Path] = {}
    for rule_file in RULES:
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", rule_file.read_text(), re.M | re.S):
            conda = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", body, re.M)
            if conda and (rule_file.parent / conda.group(1)).resolve() == env_file.resolve():
                script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", body, re.M)
                assert script, f"rule {name} has conda: but no script: (Snakemake refuses conda: on run: rules)"
                found[name] = (rule_file.parent / script.group(1)).resolve()
    return found


def _module_file(name: str) -> Path | None:
    path = WORKFLOW.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule, maybe
        elif (  # importlib.util.find_spec("package"): a package used without importing it
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "find_spec"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def reached(scripts: list[Path]) -> tuple[set[str], set[str]]:
    """The likeness modules the scripts reach and the other top-level modules they import (stdlib excluded)."""
    modules: set[str] = set()
    others: set[str] = set()
    todo = list(scripts)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(ast.parse(path.read_text())):
            top = name.split(".")[0]
            if top == "likeness":
                module_file = _module_file(name)
                if module_file is not None:
                    modules.add(name)
                    todo.append(module_file)
            elif top not in sys.stdlib_module_names and top != "__future__":
                others.add(top)
    return modules, others - PROVIDED_BY_SNAKEMAKE


def import_names(distribution: str) -> set[str]:
    """The top-level modules a distribution installed in this environment provides (read from its files:
    some wheels' top_level.txt leave out a package, e.g. dlib-bin's ``dlib``)."""
    dist = importlib.metadata.distribution(distribution)
    names = set()
    for file in dist.files or ():
        top = file.parts[0]
        if len(file.parts) > 1 and not top.endswith((".dist-info", ".data")) and "." not in top:
            names.add(top)  # a package folder
        elif len(file.parts) == 1 and file.suffix in (".py", ".so", ".pyd"):
            names.add(top.split(".")[0])  # a module file
    return names - {"__pycache__"}


def test_every_env_file_is_used_by_a_script_rule() -> None:
    assert ENV_FILES, "envs/ is empty"
    for env_file in ENV_FILES:
        assert rules_using(env_file), f"{env_file.name} is used by no rule"


def test_every_conda_directive_names_an_env_file() -> None:
    for rule_file in RULES:
        for target in re.findall(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", rule_file.read_text(), re.M):
            assert (rule_file.parent / target).resolve() in {path.resolve() for path in ENV_FILES}, target


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda path: path.name)
def test_env_lists_exactly_what_its_rules_import(env_file: Path) -> None:
    _, needed = reached(list(rules_using(env_file).values()))
    listed = {module: dist for dist in env_packages(env_file) for module in import_names(dist)}
    assert needed - set(listed) == set(), f"{env_file.name} lacks the packages of these modules"
    unused = {dist for module, dist in listed.items()} - {listed[module] for module in needed if module in listed}
    assert unused == set(), f"{env_file.name} lists packages its rules do not import"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda path: path.name)
def test_env_pins_agree_with_pyproject(env_file: Path) -> None:
    pins = pyproject_pins()
    for name, version in env_packages(env_file).items():
        assert name in pins, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert version == pins[name], f"{env_file.name}: {name} {version}, pyproject.toml {pins[name]}"
    python = next(
        entry for entry in yaml.safe_load(env_file.read_text())["dependencies"] if str(entry).startswith("python")
    )
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={python.split('=')[-1].strip()}," in requires, (python, requires)


@pytest.mark.envs
@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda path: path.name)
def test_env_builds_and_imports_its_rules_modules(env_file: Path, tmp_path: Path) -> None:
    modules, others = reached(list(rules_using(env_file).values()))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    requirements = [f"{name}=={version}" for name, version in sorted(env_packages(env_file).items())]
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *requirements],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip")},
    )
    assert install.returncode == 0, install.stdout + install.stderr
    names = sorted(modules) + sorted(others)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), "-c", code, *names],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(WORKFLOW), "PYTHONNOUSERSITE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert modules and others  # the imports were found, so the check above imported something


def test_the_script_rules_share_the_likeness_environment() -> None:
    rules = rules_using(REPO / "envs" / "likeness.yaml")
    assert set(rules) == {"train", "calibrate", "headshots", "install_trainer"}
    modules, _ = reached(list(rules.values()))
    assert {
        "likeness.train.launch",
        "likeness.train.calibrate",
        "likeness.train.headshots",
        "likeness.train.trainer_install",
    } <= modules
