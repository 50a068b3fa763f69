"""Every hint names a command that works as printed: this run's own command (profile and options kept, the
hint's target in place of the run's), else the setup's ``.venv/bin/snakemake`` (snakemake is not on PATH)."""

from __future__ import annotations

import shlex
import sys

import pytest
from likeness import summary
from likeness.train import gpus, pod
from snakemake.cli import get_argument_parser

COMMAND = summary.COMMAND_VARIABLE


def parsed(command: str):
    """What Snakemake's own argument parser makes of ``command`` (its program words dropped)."""
    words = shlex.split(command)
    head = 3 if words[1:3] == ["-m", "snakemake"] else 1
    return get_argument_parser().parse_args(words[head:])


def test_without_the_run_command_the_hint_names_the_setups_snakemake() -> None:
    assert summary.hint("train", env={}) == ".venv/bin/snakemake --cores 2 train"
    assert summary.hint("calibrate", cores=1, env={COMMAND: "  "}) == ".venv/bin/snakemake --cores 1 calibrate"


@pytest.mark.parametrize(
    ("run_command", "expected", "config", "forcerun"),
    [
        # the profile is kept, the run's own target replaced
        (
            ".venv/bin/snakemake --profile profiles/slurm all",
            ".venv/bin/snakemake train --profile profiles/slurm",
            None,
            set(),
        ),
        # --config takes any number of values: a target after it would be read as one more config entry
        (
            ".venv/bin/snakemake --cores 4 --config select='{top_n: 50}'",
            ".venv/bin/snakemake train --cores 4 --config 'select={top_n: 50}'",
            ["select={top_n: 50}"],
            set(),
        ),
        # --forcerun's rules stay its own, the target is not swallowed by it
        (
            ".venv/bin/snakemake --cores 1 -R install_trainer",
            ".venv/bin/snakemake train --cores 1 -R install_trainer",
            None,
            {"install_trainer"},
        ),
        # a dry run's command would do nothing: its -n is dropped
        (".venv/bin/snakemake -n --cores 2", ".venv/bin/snakemake train --cores 2", None, set()),
    ],
)
def test_with_the_run_command_the_hint_is_that_command_for_its_target(
    run_command: str, expected: str, config: list[str] | None, forcerun: set[str]
) -> None:
    hint = summary.hint("train", env={COMMAND: run_command})
    assert hint == expected
    args = parsed(hint)
    assert args.targets == ["train"]
    assert args.config == config
    assert set(args.forcerun or ()) == forcerun
    assert not args.dryrun


def test_the_hint_reads_the_environment_the_main_process_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMMAND, f"{sys.executable} -m snakemake --cores 3 results/lora/x.json")
    assert summary.hint("best_lora") == f"{sys.executable} -m snakemake best_lora --cores 3"
    monkeypatch.delenv(COMMAND)
    assert summary.hint("best_lora") == ".venv/bin/snakemake --cores 2 best_lora"


def test_the_gpu_notes_name_the_calibrate_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COMMAND, raising=False)
    note = gpus.resolve("auto", [], []).note
    assert "run `.venv/bin/snakemake --cores 1 calibrate` there" in note
    monkeypatch.setenv(COMMAND, ".venv/bin/snakemake --profile profiles/slurm -n")
    note = gpus.resolve("auto", [], []).note
    assert "run `.venv/bin/snakemake calibrate --profile profiles/slurm` there" in note


def test_the_pod_names_the_setups_snakemake_for_home() -> None:
    assert pod.HOME_COMMAND == ".venv/bin/snakemake --cores 2"
