"""What the demo's console shows: two lines per face job, and the closing summary as the last block, on
success and on a failure (the summary's last line is the failed job's own error); the dry run after it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixtures.runs import copy_workflow, snakemake_env, start_group
from fixtures.training import double_config, double_env

pytestmark = pytest.mark.snakemake


def console(workdir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """``snakemake ARGS`` with stdout and stderr in one stream, as a terminal shows them."""
    command = [sys.executable, "-m", "snakemake", *args]
    process = start_group(command, workdir, snakemake_env(env), subprocess.PIPE, subprocess.STDOUT)
    out, _ = process.communicate(timeout=600)
    return process.returncode, out.decode(errors="replace").splitlines()


def summary_block(lines: list[str]) -> list[str]:
    """The lines from the last summary header to the end."""
    starts = [i for i, line in enumerate(lines) if line.startswith("likeness: ---- summary")]
    assert starts, "\n".join(lines[-30:])
    return lines[starts[-1] :]


def test_the_demo_ends_with_the_summary(tmp_path):
    workdir = copy_workflow(tmp_path / "wf", extra=["config.yaml"])
    subprocess.run([sys.executable, "resources/demo/build_demo.py"], cwd=workdir, check=True, capture_output=True)
    code, lines = console(workdir, env={"CUDA_VISIBLE_DEVICES": ""})
    assert code == 0, "\n".join(lines)
    table = dict(re.findall(r"^(\w+)\s+(\d+)$", "\n".join(lines), re.MULTILINE))
    faces, jobs = int(table["crop_face"]), int(table["total"])
    print(f"{len(lines)} console lines for {jobs} jobs, {faces} of them face jobs")
    # Snakemake's progress count, once per job.
    progress = re.findall(rf"(\d+) of {jobs} steps \(\d+%\) done", "\n".join(lines))
    assert sorted(map(int, progress)) == list(range(1, jobs + 1))
    # Per face job: its progress count and the crop job's own line ("likeness: UID PHOTO: ok"), nothing
    # else. No crop rule block and no "Finished jobid" block reaches the console (the log file keeps them).
    assert not [line for line in lines if re.match(r"(local)?rule crop_face:|Finished jobid", line.strip())]
    face_lines = [line for line in lines if re.match(r"likeness: \S+ \S+: (ok|excluded: .+)$", line)]
    assert len(face_lines) == faces, [line for line in lines if "mrns" in line and line not in face_lines]
    # Every other job's block stays: "rule NAME:" or, for a rule with a message (train), "Job N: MESSAGE".
    other_jobs = [line for line in lines if re.match(r"(local)?rule \w+:$|Job \d+: ", line)]
    assert len(other_jobs) == jobs - faces
    # What is not a face job's line belongs to the other jobs' blocks, Snakemake's header and the summary.
    per_face = (len(face_lines) + faces) / faces
    rest = len(lines) - len(face_lines) - len(progress)
    print(f"{per_face:.1f} lines per face job; {rest} other lines for {jobs - faces} other jobs")
    assert per_face <= 2
    # The blocks of the jobs that read every face's record name 8 records and a count; the log file of the
    # run keeps every name.
    (crop_summary_input,) = [line for i, line in enumerate(lines) if i and lines[i - 1] == "localrule crop_summary:"]
    assert crop_summary_input.endswith(f", ... and {faces + 1 - 8:,} more"), crop_summary_input
    assert max(map(len, lines)) < 1000
    run_log = max((workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    logged = run_log.read_text().splitlines()
    (logged_input,) = [line for i, line in enumerate(logged) if i and logged[i - 1] == "localrule crop_summary:"]
    assert len(logged_input.split(", ")) == faces + 1 and "more" not in logged_input
    # The dry run still lists every job, with its block (that is what `snakemake -n` is for) ...
    code, dry = console(workdir, "-n", "--forcerun", "crop_face")
    assert code == 0, "\n".join(dry)
    assert sum(1 for line in dry if re.match(r"(local)?rule crop_face:$", line)) == faces
    # ... and after the demo, with nothing to be done, it still ends with the training's state and price.
    code, dry = console(workdir, "-n")
    assert code == 0 and "Nothing to be done" in "\n".join(dry)
    assert dry[-5].startswith("likeness: training: ready in results/train/"), dry[-5:]
    assert re.fullmatch(r"likeness: training estimate \(.+\): cost: [0-9.]+ h x [0-9.]+ USD/h = [0-9.]+ USD", dry[-4])
    assert re.match(r"likeness:   steps: \d+ images x ", dry[-3])
    exact = r"likeness:   \(exact: \d+ images in results/dataset/images, the selection is up to date\)"
    assert re.fullmatch(exact, dry[-1])

    block = summary_block(lines)
    assert block[0] == "likeness: ---- summary (finished) ----"
    assert re.fullmatch(r"likeness: faces: kept \d+ \(\d+ by masking\) of \d+ faces: .+", block[1])
    # the same counts, in the same words, as the select job's own line (archived and missing not "unreadable")
    select_line = next(line for line in lines if line.startswith("likeness: kept "))
    assert block[1] == "likeness: faces: " + select_line.removeprefix("likeness: ")
    assert block[2].startswith("likeness: training: ready in results/train/")
    assert block[-1].startswith("likeness: next: ") and "snakemake" in block[-1]
    assert all(line.startswith("likeness: ") for line in block)

    # A failure: the training refused by the budget guard. The summary is still last, and its last line is
    # the failed job's own error, with its log.
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["train"] = {**config.get("train", {}), **double_config(workdir, max_gpu_hours=0.001)}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    code, lines = console(workdir, env=double_env())
    assert code != 0
    block = summary_block(lines)
    assert block[0] == "likeness: ---- summary (FAILED) ----"
    assert re.fullmatch(
        r"likeness: train failed: training refused: .*exceeds train\.max_gpu_hours 0\.001.* \(log: logs/train\.log\)",
        block[-1],
    ), block[-1]
    assert any("run `" in line and "snakemake" in line and "again" in line for line in block)


def test_a_failed_jobs_line_is_read_only_from_a_log_of_this_run(tmp_path):
    """A job refused before it ran (sbatch said no) wrote no log: the earlier run's last line is not its error."""
    import os
    import time

    from likeness import summary

    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_text("likeness: training is ready in results/train/x/\n")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    new.write_text("error: training refused: over train.max_gpu_hours\n")
    started = time.time() - 10
    assert summary.job_errors([("train", (str(old),))], started) == [
        "likeness: train failed: it wrote no log in this run: see the lines above (log: " + str(old) + ")"
    ]
    assert summary.job_errors([("train", (str(new),))], started) == [
        f"likeness: train failed: training refused: over train.max_gpu_hours (log: {new})"
    ]


def test_long_file_lists_are_cut_to_eight_names_and_a_count():
    from likeness import summary

    files = [f"results/crops/{i:05d}.json" for i in range(20000)]
    assert summary.shorten_files(files) == [*files[:8], "... and 19,992 more"]
    assert summary.shorten_files(files[:8]) == files[:8]
    reason = "Missing output files: a.tsv, b.tsv; Input files updated by another job: " + ", ".join(files)
    assert summary.shorten_reason(reason) == (
        "Missing output files: a.tsv, b.tsv; Input files updated by another job: "
        + ", ".join(files[:8])
        + ", ... and 19,992 more"
    )
    assert summary.shorten_reason("Forced execution") == "Forced execution"
