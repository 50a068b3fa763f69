"""``train.sd_scripts: auto``: install kohya sd-scripts v0.10.1 and its own Python environment.

sd-scripts is not on PyPI. Its README installs it as: clone, ``python -m venv venv``, ``pip install
torch==2.6.0 torchvision==0.21.0 --index-url https://download.pytorch.org/whl/cu124`` (another CUDA
version: another index), ``pip install --upgrade -r requirements.txt`` (which ends with ``-e .``). This
module does the same, unattended, in ``<train.cache_dir>/sd-scripts-<commit>-<torch build>-py<X.Y>/``:

    sd-scripts/     the clone of ``train.sd_scripts_repo`` at tag v0.10.1, refused unless HEAD is
                    ``train.sd_scripts_commit``
    venv/           its environment: torch for this machine's driver, then requirements.txt
    versions.json   what was installed (commit, torch build, driver CUDA version, every package version)
    INSTALLED       the marker, written last (a copy of versions.json)

A folder without the marker is an interrupted install: it is removed and the install starts again, so a
half-built environment is never used. The environment is built in place rather than in a temporary folder
that is renamed at the end, because a venv is not relocatable (pip writes absolute paths into its scripts
and into the editable install of sd-scripts' ``library``); the marker gives the same all-or-nothing result.
An exclusive lock on ``<cache_dir>/.install.lock`` keeps two jobs from installing at once.

The torch build comes from the driver: ``nvidia-smi`` prints the highest CUDA version it supports, and
``torch_choice`` (a pure function) maps it to a PyTorch wheel index; no driver means the CPU build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from likeness.atomic import atomic_write_json
from likeness.config import Section
from likeness.errors import ConfigError, LikenessError
from likeness.sdscripts import RELEASE

MARKER = "INSTALLED"
VERSIONS = "versions.json"
LOGGER_PACKAGE = "tensorboard"  # the logger sd-scripts uses for train.toml's logging_dir
POINTER = "sd-scripts.json"  # <cache_dir>/sd-scripts.json: the newest install (the install_trainer rule's output)
TORCH_INDEX = "https://download.pytorch.org/whl/{build}"
# torch/torchvision pairs. sd-scripts v0.10.1's README: "tested with PyTorch 2.6.0", whose wheels exist for
# CUDA 11.8, 12.4 and 12.6 (no 12.1 any more); "for RTX 50 series GPUs, PyTorch 2.8.0 with CUDA 12.8/12.9".
TORCH_TESTED = ("torch==2.6.0", "torchvision==0.21.0")
TORCH_BLACKWELL = ("torch==2.8.0", "torchvision==0.23.0")
# (minimum driver CUDA version, wheel build), best first, for torch 2.6.0. A CUDA 12.x build needs a driver
# that supports at least that 12.x: minor-version compatibility covers most kernels but not PTX JIT, so the
# build is never newer than the driver.
CUDA_BUILDS = (((12, 6), "cu126"), ((12, 4), "cu124"), ((11, 8), "cu118"))
BLACKWELL_BUILD = ((12, 8), "cu128")
BLACKWELL_COMPUTE_CAPABILITY = 10.0  # RTX 50-series and B100/B200 (sm_100/sm_120): need CUDA 12.8 wheels

Log = Callable[[str], None]


# --- which torch ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchChoice:
    build: str  # cu126, cu124, cu118, cu128 or cpu
    packages: tuple[str, ...]
    index_url: str  # "" = pip's default index
    reason: str


def parse_driver_cuda(nvidia_smi_output: str) -> tuple[int, int] | None:
    """The highest CUDA version the driver supports, from ``nvidia-smi``'s header ("CUDA Version: 12.4")."""
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", nvidia_smi_output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_compute_capabilities(query_output: str) -> list[float]:
    """``nvidia-smi --query-gpu=compute_cap --format=csv,noheader``: one "8.9" a line (unparsable lines skipped)."""
    caps = []
    for line in query_output.splitlines():
        with contextlib.suppress(ValueError):
            caps.append(float(line.strip()))
    return caps


def torch_choice(driver_cuda: tuple[int, int] | None, compute_capabilities: Sequence[float] = ()) -> TorchChoice:
    """The torch build for a driver's CUDA version (None: no usable driver) and the GPUs' compute capabilities.

    Raises LikenessError when the driver is too old for any CUDA build that torch offers for this GPU.
    """
    if driver_cuda is None:
        return TorchChoice("cpu", TORCH_TESTED, TORCH_INDEX.format(build="cpu"), "no NVIDIA driver: CPU build")
    shown = f"{driver_cuda[0]}.{driver_cuda[1]}"
    if any(cap >= BLACKWELL_COMPUTE_CAPABILITY for cap in compute_capabilities):
        minimum, build = BLACKWELL_BUILD
        if driver_cuda < minimum:
            raise LikenessError(
                f"this GPU needs CUDA 12.8 wheels but the driver supports only CUDA {shown}: update the NVIDIA driver"
            )
        return TorchChoice(
            build, TORCH_BLACKWELL, TORCH_INDEX.format(build=build), f"driver CUDA {shown}, RTX 50-class GPU"
        )
    for minimum, build in CUDA_BUILDS:
        if driver_cuda >= minimum:
            return TorchChoice(build, TORCH_TESTED, TORCH_INDEX.format(build=build), f"driver CUDA {shown}")
    raise LikenessError(
        f"the NVIDIA driver supports only CUDA {shown}; torch 2.6 needs 11.8 or newer: update the driver"
    )


def detect_driver(env: Mapping[str, str] | None = None) -> tuple[tuple[int, int] | None, list[float], str]:
    """(driver CUDA version, compute capabilities, GPU names) from ``nvidia-smi``; (None, [], "") without one."""
    env = dict(os.environ if env is None else env)
    if env.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return None, [], ""

    def run(*args: str) -> str:
        try:
            result = subprocess.run(
                ["nvidia-smi", *args], capture_output=True, text=True, timeout=20, check=False, env=env
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout if result.returncode == 0 else ""

    header = run()
    cuda = parse_driver_cuda(header)
    if cuda is None:
        return None, [], ""
    caps = parse_compute_capabilities(run("--query-gpu=compute_cap", "--format=csv,noheader"))
    names = run("--query-gpu=name", "--format=csv,noheader").strip().replace("\n", ", ")
    return cuda, caps, names


def configured_torch(cfg: Section, env: Mapping[str, str] | None = None) -> TorchChoice:
    """``train.torch`` / ``train.torch_index_url``: "auto" follows the driver; anything else is taken as given."""
    packages_value = cfg.torch.strip()
    index_value = cfg.torch_index_url
    if packages_value == "auto" or index_value == "auto":
        cuda, caps, _names = detect_driver(env)
        auto = torch_choice(cuda, caps)
    else:
        auto = TorchChoice("custom", (), "", "")
    packages = auto.packages if packages_value == "auto" else tuple(packages_value.split())
    index_url = auto.index_url if index_value == "auto" else index_value
    build = auto.build if packages_value == "auto" else "custom"
    reason = auto.reason if packages_value == "auto" else "train.torch"
    return TorchChoice(build, packages, index_url, reason)


# --- the install folder ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    root: Path  # <cache_dir>/sd-scripts-<commit12>-<build>-py<X.Y>
    versions: dict[str, Any]

    @property
    def checkout(self) -> Path:
        return self.root / "sd-scripts"

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def bin_dir(self) -> Path:
        return self.root / "venv" / "bin"


def install_root(cfg: Section, choice: TorchChoice) -> Path:
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    # absolute: pip runs requirements.txt from inside the checkout, and the launch from another folder
    return Path(cfg.cache_dir).expanduser().absolute() / f"sd-scripts-{cfg.sd_scripts_commit[:12]}-{choice.build}-{py}"


def installed(root: Path) -> Install | None:
    """The install in ``root`` when its marker is there (the install finished), else None."""
    try:
        versions = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Install(root, versions)


@contextlib.contextmanager
def _install_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".install.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a second job waits for the first install, then finds it done
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _run(command: list[str], log_file: Any, *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run a step of the install with its output appended to the log; returns its output."""
    log_file.write(f"$ {' '.join(command)}\n")
    log_file.flush()
    result = subprocess.run(
        command, cwd=cwd, env=dict(env) if env is not None else None, capture_output=True, text=True, check=False
    )
    log_file.write(result.stdout + result.stderr)
    log_file.flush()
    if result.returncode != 0:
        raise LikenessError(
            f"installing sd-scripts failed at `{' '.join(command[:4])} ...` (exit {result.returncode}): "
            f"{_last_line(result.stderr) or _last_line(result.stdout)}"
        )
    return result.stdout


def head_commit(checkout: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _check_commit(checkout: Path, cfg: Section, *, cached: bool = False) -> None:
    expected = cfg.sd_scripts_commit
    actual = head_commit(checkout) or "unknown"
    if actual != expected:
        what = f"the install in {checkout} is at" if cached else f"{cfg.sd_scripts_repo} tag {RELEASE} is"
        action = "refusing to use it (delete that folder to reinstall)" if cached else "refusing to install it"
        raise ConfigError("train.sd_scripts_commit", f"{what} commit {actual}, not {expected}: {action}")


def _clone(cfg: Section, target: Path, log_file: Any, env: Mapping[str, str]) -> None:
    repo = cfg.sd_scripts_repo
    git_env = {**env, "GIT_TERMINAL_PROMPT": "0"}  # a private or mistyped URL fails instead of asking
    try:
        _run(
            [
                "git",
                "-c",
                "advice.detachedHead=false",
                "clone",
                "--quiet",
                "--branch",
                RELEASE,
                "--depth",
                "1",
                repo,
                str(target),
            ],
            log_file,
            env=git_env,
        )
    except LikenessError as error:
        raise ConfigError("train.sd_scripts_repo", f"cannot clone {RELEASE} of {repo}: {error}") from None
    except OSError:
        raise LikenessError("git is not installed: it is needed to fetch sd-scripts") from None


def _package_versions(python: Path, log_file: Any, env: Mapping[str, str]) -> dict[str, str]:
    out = _run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], log_file, env=env)
    return {item["name"]: item["version"] for item in json.loads(out)}


@contextlib.contextmanager
def _output_file(output: str | Path | TextIO) -> Iterator[TextIO]:
    if not isinstance(output, str | Path):
        yield output  # the job's log, open already
        return
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with Path(output).open("a", encoding="utf-8") as handle:
        yield handle


def ensure_installed(
    cfg: Section,
    output: str | Path | TextIO,
    *,
    env: Mapping[str, str] | None = None,
    log: Log = print,
) -> Install:
    """The finished install for this config and machine; clones and builds it first when needed.

    ``output``: where git's and pip's output goes: a log file (appended to) or the job's open log.
    ``cfg`` is the ``train`` settings. Raises ConfigError (wrong commit, unclonable repo) or
    LikenessError (a failed pip step, with its last line); an install cut short is redone from scratch.
    """
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONPATH", None)  # the workflow's own packages must not leak into sd-scripts' environment
    env.pop("VIRTUAL_ENV", None)
    choice = configured_torch(cfg, env)
    root = install_root(cfg, choice)
    cache_dir = root.parent
    with _install_lock(cache_dir):
        done = installed(root)
        if done:
            _check_commit(done.checkout, cfg, cached=True)  # an edited cache is refused like a wrong clone
            _write_pointer(cache_dir, done)
            return done
        if root.exists():
            log(f"install: removing an unfinished install in {root}/ and starting again")
            shutil.rmtree(root)
        root.mkdir(parents=True)
        try:
            with _output_file(output) as log_file:
                log_file.write(
                    f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')} install sd-scripts into {root}\n"
                )
                log_file.flush()
                result = _build(cfg, choice, root, log_file, env, log)
        except BaseException:
            # Leave no half-built folder that looks usable: without the marker it is removed next time
            # anyway; removing it now also frees the disk (and a refused clone leaves nothing behind).
            shutil.rmtree(root, ignore_errors=True)
            raise
        _write_pointer(cache_dir, result)
        return result


def _build(cfg: Section, choice: TorchChoice, root: Path, log_file: Any, env: dict[str, str], log: Log) -> Install:
    install = Install(root, {})
    log(f"install: cloning sd-scripts {RELEASE} from {cfg.sd_scripts_repo}")
    _clone(cfg, install.checkout, log_file, env)
    _check_commit(install.checkout, cfg)
    log(f"install: creating its Python environment ({sys.executable})")
    _run([sys.executable, "-m", "venv", str(root / "venv")], log_file, env=env)
    pip = [str(install.python), "-m", "pip", "install", "--disable-pip-version-check"]
    if choice.packages:
        index = ["--index-url", choice.index_url] if choice.index_url else []
        log(f"install: {' '.join(choice.packages)} ({choice.build}: {choice.reason})")
        _run([*pip, *choice.packages, *index], log_file, env=env)
    log("install: sd-scripts' requirements.txt")
    _run([*pip, "-r", "requirements.txt"], log_file, cwd=install.checkout, env=env)
    cuda, _caps, gpu_names = detect_driver(env)
    versions = {
        "sd_scripts_repo": cfg.sd_scripts_repo,
        "sd_scripts_tag": RELEASE,
        "sd_scripts_commit": head_commit(install.checkout),
        "torch_build": choice.build,
        "torch_packages": list(choice.packages),
        "torch_index_url": choice.index_url,
        "torch_reason": choice.reason,
        "driver_cuda": f"{cuda[0]}.{cuda[1]}" if cuda else None,
        "gpus": gpu_names,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
        "packages": _package_versions(install.python, log_file, env),
        "installed": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not any(name.lower() == LOGGER_PACKAGE for name in versions["packages"]):
        # train.toml's logging_dir makes sd-scripts log to TensorBoard: without it the launch would fail
        log(f"install: WARNING: {LOGGER_PACKAGE} is not installed (sd-scripts' requirements.txt lists it)")
    atomic_write_json(root / VERSIONS, versions)
    atomic_write_json(root / MARKER, versions)  # last: from here on the install counts as finished
    log(f"install: done; versions in {root / VERSIONS}")
    return Install(root, versions)


def _write_pointer(cache_dir: Path, install: Install) -> None:
    record = {"root": str(install.root), **{k: install.versions.get(k) for k in ("sd_scripts_commit", "torch_build")}}
    atomic_write_json(cache_dir / POINTER, record)


# --- using it -------------------------------------------------------------------------------------------------


def launch_settings(cfg: Section, install: Install) -> Section:
    """``cfg`` with sd_scripts, launcher and python pointing into the install (for launch.launch_command).

    The default launcher ``accelerate launch ...`` runs the environment's own ``accelerate``; an empty
    launcher runs the environment's python. (The venv was built where it is, so its scripts work.)
    """
    changes = {"sd_scripts": str(install.checkout.absolute())}
    launcher = cfg.launcher.split()
    if launcher and launcher[0] == "accelerate":
        changes["launcher"] = " ".join([str((install.bin_dir / "accelerate").absolute()), *launcher[1:]])
    if not cfg.python:
        changes["python"] = str(install.python.absolute())
    return dataclasses.replace(cfg, **changes)


def describe(install: Install) -> str:
    v = install.versions
    torch = v.get("packages", {}).get("torch", "not installed")
    commit = str(v.get("sd_scripts_commit"))[:12]
    return f"sd-scripts {v.get('sd_scripts_tag')} ({commit}), torch {torch} ({v.get('torch_build')})"
