"""train.sd_scripts: auto — the torch choice, and real git and pip installs from a local remote and wheels.

The "sd-scripts" cloned here is a local git repository whose commit holds the TEST DOUBLE of its training
script (tests/doubles/); torch is replaced by a small package through train.torch. git, venv and pip run for
real, offline (pip --no-index --find-links).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import REPO_ROOT
from fixtures.runs import kill_group, start_group, wait_for
from fixtures.training import REQUIREMENT, TORCH_STANDIN_NAME, install_config, make_remote, make_wheels, pip_env
from likeness.config import Section, validate_section
from likeness.errors import ConfigError, LikenessError
from likeness.train import trainer_install as ti

NVIDIA_SMI_HEADER = """\
Mon Nov 30 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""

# --- the torch build for a driver ------------------------------------------------------------------------------


def test_driver_cuda_version_from_the_nvidia_smi_header() -> None:
    assert ti.parse_driver_cuda(NVIDIA_SMI_HEADER) == (12, 4)
    assert ti.parse_driver_cuda("NVIDIA-SMI has failed because it couldn't communicate with the driver") is None
    assert ti.parse_compute_capabilities("8.9\n12.0\n[N/A]\n") == [8.9, 12.0]


@pytest.mark.parametrize(
    ("driver", "build", "torch"),
    [
        (None, "cpu", "torch==2.6.0"),
        ((11, 8), "cu118", "torch==2.6.0"),
        ((12, 1), "cu118", "torch==2.6.0"),  # torch 2.6 has no cu121 wheels: the newest build not above the driver
        ((12, 3), "cu118", "torch==2.6.0"),
        ((12, 4), "cu124", "torch==2.6.0"),
        ((12, 5), "cu124", "torch==2.6.0"),
        ((12, 6), "cu126", "torch==2.6.0"),
        ((12, 9), "cu126", "torch==2.6.0"),  # the tested torch, not a newer one, while the GPU allows it
        ((13, 0), "cu126", "torch==2.6.0"),
    ],
)
def test_torch_build_follows_the_driver(driver, build: str, torch: str) -> None:
    choice = ti.torch_choice(driver, [8.9])
    assert choice.build == build and choice.packages[0] == torch
    assert choice.index_url == f"https://download.pytorch.org/whl/{build}"


def test_rtx_50_class_gpus_get_cuda_12_8_wheels_or_a_clear_refusal() -> None:
    choice = ti.torch_choice((12, 8), [12.0])
    assert (choice.build, choice.packages) == ("cu128", ("torch==2.8.0", "torchvision==0.23.0"))
    with pytest.raises(LikenessError, match=r"needs CUDA 12\.8 wheels .* only CUDA 12\.6"):
        ti.torch_choice((12, 6), [12.0])


def test_a_driver_too_old_for_any_build_is_one_line() -> None:
    with pytest.raises(LikenessError, match=r"supports only CUDA 11\.4") as error:
        ti.torch_choice((11, 4), [7.5])
    assert "\n" not in str(error.value)


def test_explicit_torch_settings_are_taken_as_given() -> None:
    choice = ti.configured_torch(
        validate_section("train", {"torch": "torch==2.7.1 torchvision==0.22.1", "torch_index_url": "https://x/simple"})
    )
    assert choice.packages == ("torch==2.7.1", "torchvision==0.22.1") and choice.index_url == "https://x/simple"
    assert choice.build == "custom"


def test_auto_without_a_driver_picks_the_cpu_build() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # what a machine without a usable GPU looks like
    choice = ti.configured_torch(validate_section("train", {"torch": "auto", "torch_index_url": "auto"}), env)
    assert choice.build == "cpu" and choice.index_url.endswith("/whl/cpu")


# --- installing ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    return make_wheels(tmp_path_factory.mktemp("wheels"))


def _cfg(tmp_path: Path, remote: Path, commit: str, **overrides) -> Section:
    return validate_section("train", install_config(tmp_path, remote, commit, **overrides))


def test_install_clones_checks_the_commit_builds_the_environment_and_records_versions(tmp_path, wheels) -> None:
    remote, commit = make_remote(tmp_path / "remote")
    cfg = _cfg(tmp_path, remote, commit)
    lines: list[str] = []
    install = ti.ensure_installed(cfg, tmp_path / "logs" / "install.log", env=pip_env(wheels), log=lines.append)

    assert install.root.parent == tmp_path / "cache" / "train"
    assert ti.head_commit(install.checkout) == commit
    assert (install.checkout / "sdxl_train_network.py").read_bytes() == (
        REPO_ROOT / "tests" / "doubles" / "sdxl_train_network.py"
    ).read_bytes()
    # the environment's own python imports what requirements.txt and train.torch named
    probe = subprocess.run(
        [str(install.python), "-c", "import likeness_probe_req, likeness_probe_torch, sys; print(sys.prefix)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == str(install.root / "venv")
    versions = json.loads((install.root / ti.VERSIONS).read_text())
    assert versions["sd_scripts_commit"] == commit and versions["sd_scripts_tag"] == "v0.10.1"
    assert versions["packages"][REQUIREMENT] == "1.0" and versions["packages"][TORCH_STANDIN_NAME] == "2.6.0"
    assert versions["torch_packages"] == [f"{TORCH_STANDIN_NAME}==2.6.0"]
    assert json.loads((install.root / ti.MARKER).read_text()) == versions
    pointer = json.loads((tmp_path / "cache" / "train" / ti.POINTER).read_text())
    assert pointer["root"] == str(install.root)
    log_text = (tmp_path / "logs" / "install.log").read_text()
    assert "clone --quiet --branch v0.10.1" in log_text and "-r requirements.txt" in log_text
    assert any("cloning sd-scripts v0.10.1" in line for line in lines)

    # a second call finds the finished install and changes nothing
    marker_mtime = (install.root / ti.MARKER).stat().st_mtime_ns
    again = ti.ensure_installed(cfg, tmp_path / "logs" / "install.log", env=pip_env(wheels), log=lines.append)
    assert again.root == install.root and (install.root / ti.MARKER).stat().st_mtime_ns == marker_mtime

    # the training launches the environment's accelerate (default launcher) or python (empty launcher)
    settings = ti.launch_settings(cfg, install)
    assert settings.sd_scripts == str(install.checkout.absolute())
    assert settings.launcher.split()[:2] == [str(install.bin_dir / "accelerate"), "launch"]
    no_launcher = dataclasses.replace(cfg, launcher="")
    assert ti.launch_settings(no_launcher, install).python == str(install.python.absolute())


def test_wrong_commit_is_refused_with_one_line_and_leaves_nothing(tmp_path, wheels) -> None:
    remote, _commit = make_remote(tmp_path / "remote")
    cfg = _cfg(tmp_path, remote, "ae72efb92babe89ff8e70f057e42db68440e8d61")  # the real one: not this remote's
    with pytest.raises(ConfigError) as error:
        ti.ensure_installed(cfg, tmp_path / "install.log", env=pip_env(wheels), log=lambda _line: None)
    message = str(error.value)
    assert "\n" not in message and "train.sd_scripts_commit" in message and "refusing" in message
    assert not [p for p in (tmp_path / "cache" / "train").iterdir() if p.name.startswith("sd-scripts-")]


def test_an_edited_checkout_in_the_cache_is_refused(tmp_path, wheels) -> None:
    remote, commit = make_remote(tmp_path / "remote")
    cfg = _cfg(tmp_path, remote, commit)
    install = ti.ensure_installed(cfg, tmp_path / "install.log", env=pip_env(wheels), log=lambda _line: None)
    (install.checkout / "requirements.txt").write_text("changed\n")
    subprocess.run(["git", "-C", str(install.checkout), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qam", "local edit"], check=True)  # fmt: skip
    with pytest.raises(ConfigError, match="refusing"):
        ti.ensure_installed(cfg, tmp_path / "install.log", env=pip_env(wheels), log=lambda _line: None)


def test_a_failing_pip_step_is_one_line_and_leaves_no_usable_looking_folder(tmp_path, wheels) -> None:
    remote, commit = make_remote(tmp_path / "remote", requirements="likeness-probe-missing==9.9\n")
    cfg = _cfg(tmp_path, remote, commit)
    with pytest.raises(LikenessError) as error:
        ti.ensure_installed(cfg, tmp_path / "install.log", env=pip_env(wheels), log=lambda _line: None)
    assert "\n" not in str(error.value) and "likeness-probe-missing" in str(error.value)
    assert not list((tmp_path / "cache" / "train").glob("sd-scripts-*"))


def test_an_unclonable_remote_names_the_key(tmp_path, wheels) -> None:
    cfg = _cfg(tmp_path, tmp_path / "no-such-repo", "0" * 40)
    with pytest.raises(ConfigError, match=r"train\.sd_scripts_repo") as error:
        ti.ensure_installed(cfg, tmp_path / "install.log", env=pip_env(wheels), log=lambda _line: None)
    assert "\n" not in str(error.value)


INSTALL_SCRIPT = """
from likeness.config import validate_section
from likeness.train import trainer_install
cfg = validate_section("train", {cfg!r})
trainer_install.ensure_installed(cfg, {log!r}, log=lambda line: print(line, flush=True))
"""


def test_an_install_killed_midway_is_redone_cleanly(tmp_path, wheels) -> None:
    remote, commit = make_remote(tmp_path / "remote")
    cfg = install_config(tmp_path, remote, commit)
    env = {**pip_env(wheels), "PYTHONPATH": str(REPO_ROOT / "workflow")}
    script = INSTALL_SCRIPT.format(cfg=cfg, log=str(tmp_path / "install.log"))
    process = start_group([sys.executable, "-c", script], tmp_path, env, subprocess.DEVNULL, subprocess.DEVNULL)
    cache = tmp_path / "cache" / "train"
    try:
        # the environment exists but pip has not installed the requirements yet: kill everything there
        wait_for(lambda: list(cache.glob("sd-scripts-*/venv/bin/python")), 120, "the environment being created")
    finally:
        kill_group(process)
    (root,) = cache.glob("sd-scripts-*")
    assert not (root / ti.MARKER).exists()  # cut short: no marker, so never used as it is
    (root / "venv" / "leftover-from-the-killed-run").write_text("x")

    lines: list[str] = []
    install = ti.ensure_installed(validate_section("train", cfg), tmp_path / "install.log", env=env, log=lines.append)
    assert install.root == root and (root / ti.MARKER).is_file()
    assert any("removing an unfinished install" in line for line in lines)
    assert not (root / "venv" / "leftover-from-the-killed-run").exists()
    assert json.loads((root / ti.VERSIONS).read_text())["packages"][REQUIREMENT] == "1.0"
