"""Run folders, resuming after SIGKILL, half-written states, the budget guard and the ready state.

The trainer here is tests/doubles/sdxl_train_network.py, a TEST DOUBLE of sd-scripts' script that writes
the same files and state folders.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest
from fixtures.runs import kill_group, start_stage, wait_for
from fixtures.training import (
    CLASS_WORD,
    TRIGGER,
    double_config,
    double_env,
    load_double,
    make_images,
    only_run_dir,
    read_jsonl,
)
from likeness.config import Section, validate_section
from likeness.errors import ConfigError, LikenessError
from likeness.joblog import JobLog
from likeness.sdscripts import progress, states
from likeness.train import calibration, launch, readiness, runplan
from likeness.train import estimate as est
from likeness.train import status as st


def settings(cfg: dict | Section) -> Section:
    return cfg if isinstance(cfg, Section) else validate_section("train", cfg)


def prepare(tmp_path: Path, cfg: dict | Section, dataset: Path | None = None) -> runplan.RunPlan:
    dataset = dataset or tmp_path / "dataset"
    return runplan.prepare_run(
        settings(cfg), dataset, dataset, trigger=TRIGGER, class_word=CLASS_WORD, runs_root=tmp_path / "runs"
    )


def run(plan: runplan.RunPlan, cfg: dict | Section, log_path: Path, **options: object) -> tuple[int, str]:
    """run_training with its job log in ``log_path``; the exit code and the log's text."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as handle:
        code = launch.run_training(plan, settings(cfg), JobLog(handle, echo=False), **options)  # type: ignore[arg-type]
    return code, log_path.read_text()


# --- run folders --------------------------------------------------------------------------------------------


def test_same_inputs_give_the_same_run_folder(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    cfg = double_config(tmp_path)
    first = prepare(tmp_path, cfg)
    mtime = Path(first.train_toml).stat().st_mtime_ns
    second = prepare(tmp_path, cfg)
    assert first.run_id == second.run_id
    assert Path(second.train_toml).stat().st_mtime_ns == mtime  # unchanged files are not rewritten
    plan = runplan.RunPlan.load(first.run_dir)
    assert plan.train_sizes == [(256, 256)] * 3


def test_config_change_starts_a_new_run_folder_and_keeps_the_old(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    old = prepare(tmp_path, double_config(tmp_path))
    (Path(old.output_dir) / "face-000001.safetensors").write_bytes(b"trained earlier")
    new = prepare(tmp_path, double_config(tmp_path, network_dim=8))
    assert new.run_id != old.run_id
    assert (Path(old.output_dir) / "face-000001.safetensors").read_bytes() == b"trained earlier"
    assert Path(old.train_toml).is_file() and Path(new.train_toml).is_file()
    # settings that do not change the LoRA (GPU, price, budget, launcher) keep the run
    same = prepare(tmp_path, double_config(tmp_path, network_dim=8, gpu="H100", gpu_hourly_cost=3.0))
    assert same.run_id == new.run_id


def test_dataset_change_starts_a_new_run_folder(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    first = prepare(tmp_path, double_config(tmp_path))
    caption = tmp_path / "dataset" / "face00000.txt"
    caption.write_text(f"{TRIGGER}, {CLASS_WORD}, glasses\n")
    second = prepare(tmp_path, double_config(tmp_path))
    assert second.run_id != first.run_id
    # the first run keeps its own copy of the caption it was planned with
    assert "glasses" not in (Path(first.run_dir) / "dataset" / "face00000.txt").read_text()


def test_images_without_captions_are_excluded_with_a_reason(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    (tmp_path / "dataset" / "face00001.txt").unlink()
    plan = prepare(tmp_path, double_config(tmp_path))
    assert len(plan.train_sizes) == 2
    assert plan.excluded == ["face00001.jpg: no caption file face00001.txt"]


# --- states -------------------------------------------------------------------------------------------------


def test_half_written_states_are_skipped(tmp_path: Path) -> None:
    double = load_double()
    out = tmp_path / "output"
    double.write_state(out / "face-000001-state", 1, 3)
    double.write_state(out / "face-000002-state", 2, 6)
    double.write_state(out / "face-000003-state", 3, 9)
    double.write_state(out / "face-000004-state", 4, 12)
    (out / "face-000004-state" / "random_states_0.pkl").unlink()  # killed before the last file
    truncated = out / "face-000003-state" / "optimizer.bin"
    truncated.write_bytes(truncated.read_bytes()[:40])  # killed in the middle of a file
    assert states.find_resume_state(out, "face") == (out / "face-000002-state", 2)
    (out / "face-000002-state" / "train_state.json").write_text("{not json")
    assert states.find_resume_state(out, "face") == (out / "face-000001-state", 1)
    assert states.find_resume_state(out, "other") is None


def test_launch_command_resumes_from_the_next_epoch(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    cfg = settings(double_config(tmp_path, launcher="accelerate launch --num_cpu_threads_per_process 1"))
    plan = prepare(tmp_path, cfg)
    state = Path(plan.output_dir) / "face-000003-state"
    command = launch.launch_command(cfg, (state, 3))
    assert command[:4] == ["accelerate", "launch", "--num_cpu_threads_per_process", "1"]
    assert command[4].endswith("sdxl_train_network.py")
    # sd-scripts runs inside the run folder: every path it gets is relative to it
    assert command[5:] == [
        "--config_file", "train.toml", "--dataset_config", "dataset.toml",
        "--resume", "output/face-000003-state", "--initial_epoch", "4",
    ]  # fmt: skip
    assert launch.launch_command(cfg, None)[-2:] == ["--dataset_config", "dataset.toml"]


def test_toml_paths_are_relative_to_the_run_folder_which_trains_after_a_move(tmp_path: Path) -> None:
    import shutil
    import tomllib

    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path, max_train_epochs=1)
    plan = prepare(tmp_path, cfg)
    dataset_doc = tomllib.loads(Path(plan.dataset_toml).read_text())
    train_doc = tomllib.loads(Path(plan.train_toml).read_text())
    assert dataset_doc["datasets"][0]["subsets"][0]["image_dir"] == "dataset"
    flat = {k: v for table in train_doc.values() for k, v in (table.items() if isinstance(table, dict) else [])}
    assert flat["output_dir"] == "output" and flat["sample_prompts"] == "sample_prompts.txt"
    assert str(tmp_path) not in Path(plan.dataset_toml).read_text()
    # the folder moves (a bundle unpacked elsewhere, a cluster mounting it under another path): it still trains
    moved = tmp_path / "elsewhere" / plan.run_id
    shutil.move(plan.run_dir, moved)
    shutil.rmtree(tmp_path / "dataset")
    moved_plan = runplan.RunPlan.load(moved)
    assert moved_plan.output_dir == str(moved / "output")
    assert run(moved_plan, cfg, tmp_path / "train.log", env=double_env())[0] == 0
    assert (moved / "output" / "face.safetensors").is_file()
    assert not (tmp_path / "runs" / plan.run_id).exists()


def test_progress_lines_and_measured_speed() -> None:
    log = (
        "epoch 1/2\r\nsteps:  10%|#         | 2/20 [00:06<00:54,  3.00s/it, avr_loss=0.2]"
        "\rsteps:  50%|#####     | 10/20 [00:25<00:25,  2.50s/it, avr_loss=0.1]\n"
        "steps: 100%|##########| 20/20 [00:10<00:00,  2.00it/s, avr_loss=0.1]\n"
    )
    parsed = progress.parse_progress("steps:  50%|#####     | 10/20 [00:25<00:25,  2.50s/it, avr_loss=0.1]")
    assert parsed == progress.Progress(10, 20, "00:25", 2.5)
    assert progress.measured_seconds_per_step(log) == pytest.approx(0.5)  # the last line: 2 it/s
    assert progress.measured_seconds_per_step("no progress here") is None


# --- running with the test double ---------------------------------------------------------------------------


def test_full_run_writes_lora_status_and_calibration(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    cfg = double_config(tmp_path)
    plan = prepare(tmp_path, cfg)
    status = tmp_path / "status.json"
    code, text = run(plan, cfg, tmp_path / "logs" / "train.log", status_path=status, env=double_env(0.01))
    assert code == 0, text
    assert json.loads(status.read_text())["state"] == "done"
    assert plan.final_lora.is_file()
    assert (Path(plan.output_dir) / "face-000001.safetensors").is_file()
    assert len(list((Path(plan.output_dir) / "sample").glob("face_e*.png"))) == 3  # one prompt, 3 epochs
    steps = read_jsonl(Path(plan.output_dir) / "double_steps.jsonl")
    assert len(steps) == 9  # 3 images x 1 repeat, batch 1, 3 epochs, as the estimate says
    assert len(steps) == runplan.plan_estimate(plan, settings(cfg), None).total_steps
    calibration = est.load_calibration(tmp_path / "runs" / "calibration.tsv")
    assert [row.gpu for row in calibration] == ["CPU"] and calibration[0].source.startswith("measured")
    assert calibration[0].steps == 9 and calibration[0].settings == est.speed_settings(settings(cfg).as_dict())
    # 9 steps of a double 300x faster than the CPU row: stored, but the next estimate keeps the table's figure
    again = runplan.plan_estimate(plan, settings(cfg), tmp_path / "runs" / "calibration.tsv")
    assert again.speed_source.startswith("table: CPU") and "not used: measured" in again.speed_source
    assert "only 9 steps timed" in again.speed_source
    assert "stored in" in text and "but flagged" in text
    assert "steps: 100%" in (tmp_path / "logs" / "train.log").read_text()  # the child's output reaches the log
    # a finished run is not trained again
    code, text = run(plan, cfg, tmp_path / "logs" / "train.log", env=double_env())
    assert code == 0
    assert len(read_jsonl(Path(plan.output_dir) / "double_invocations.jsonl")) == 1
    assert "already finished" in text
    assert "steps: 100%" in text  # the rule's log of a finished run is the training's log again


def test_sigkill_mid_epoch_then_rerun_resumes_from_the_last_complete_state(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 4)
    cfg = double_config(tmp_path, max_train_epochs=3)
    process = start_stage(tmp_path, cfg, tmp_path / "dataset", double_env(step_seconds=0.2))
    runs = tmp_path / "results" / "train"
    wait_for(lambda: runs.is_dir() and any(p.is_dir() for p in runs.iterdir()), what="the run folder")
    output = only_run_dir(runs) / "output"
    steps_file = output / "double_steps.jsonl"
    wait_for(lambda: any(s["epoch"] == 2 for s in read_jsonl(steps_file)), timeout=60, what="epoch 2 to start")
    assert states.state_epoch(output / "face-000001-state") == 1
    kill_group(process)
    assert not (output / "face.safetensors").exists()
    assert not (output / "face-000002-state").exists()
    assert not (runs / "status.json").exists()  # no rule output: Snakemake just runs the job again

    rerun = start_stage(tmp_path, cfg, tmp_path / "dataset", double_env(step_seconds=0.0))
    log, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, log.decode()
    invocations = read_jsonl(output / "double_invocations.jsonl")
    assert len(invocations) == 2
    assert "--resume" not in invocations[0]["argv"]
    argv = invocations[1]["argv"]
    assert argv[argv.index("--resume") + 1] == "output/face-000001-state"  # relative to the run folder
    assert argv[argv.index("--initial_epoch") + 1] == "2"
    second_pid = invocations[1]["pid"]
    assert {s["epoch"] for s in read_jsonl(steps_file) if s["pid"] == second_pid} == {2, 3}
    assert (output / "face.safetensors").is_file()
    assert (output / "face-000001.safetensors").is_file()  # earlier epochs stay
    assert json.loads((runs / "status.json").read_text())["state"] == "done"
    # the run's own log holds both launches (the rule's log holds the last job's)
    assert (output / "likeness_train.log").read_text().count("\n=== ") == 2


def test_sigkill_while_saving_a_state_resumes_from_the_one_before(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path, max_train_epochs=3, sample_every_n_epochs=0)
    process = start_stage(tmp_path, cfg, tmp_path / "dataset", double_env(save_seconds=0.5))
    runs = tmp_path / "results" / "train"
    wait_for(lambda: runs.is_dir() and any(p.is_dir() for p in runs.iterdir()), what="the run folder")
    output = only_run_dir(runs) / "output"
    half = output / "face-000002-state"
    wait_for(lambda: (half / "model.safetensors").is_file(), timeout=60, what="epoch 2's state to be half written")
    kill_group(process)
    assert not (half / "random_states_0.pkl").exists()
    assert states.state_epoch(half) is None

    rerun = start_stage(tmp_path, cfg, tmp_path / "dataset", double_env())
    log, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, log.decode()
    argv = read_jsonl(output / "double_invocations.jsonl")[-1]["argv"]
    assert argv[argv.index("--resume") + 1].endswith("face-000001-state")
    assert argv[argv.index("--initial_epoch") + 1] == "2"
    assert states.state_epoch(half) == 2  # rewritten by the resumed run
    assert (output / "face.safetensors").is_file()


def test_sigterm_is_forwarded_and_the_run_counts_as_interrupted(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path, max_train_epochs=5)
    process = start_stage(tmp_path, cfg, tmp_path / "dataset", double_env(step_seconds=0.2))
    runs = tmp_path / "results" / "train"
    wait_for(lambda: runs.is_dir() and any(p.is_dir() for p in runs.iterdir()), what="the run folder")
    steps_file = only_run_dir(runs) / "output" / "double_steps.jsonl"
    wait_for(lambda: bool(read_jsonl(steps_file)), what="training to start")
    os.kill(process.pid, signal.SIGTERM)  # the stage process only, as a scheduler would
    log, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, log.decode()
    assert json.loads((only_run_dir(runs) / "status.json").read_text())["state"] == "interrupted"
    assert not (runs / "status.json").exists()  # the rule's output holds only final states
    child = read_jsonl(only_run_dir(runs) / "output" / "double_invocations.jsonl")[0]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the training itself stopped too


def test_budget_guard_refuses_to_start(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    cfg = double_config(tmp_path, max_gpu_hours=0.2, max_train_epochs=20, sample_every_n_epochs=0)
    plan = prepare(tmp_path, cfg)
    code, text = run(plan, cfg, tmp_path / "train.log", env=double_env())
    assert code != 0
    refusal = [line for line in text.splitlines() if line.startswith("training refused")]
    assert len(refusal) == 1
    assert "exceeds train.max_gpu_hours 0.2 by" in refusal[0]
    assert "train.max_train_epochs 8 (now 20)" in refusal[0]  # 8 x 3 x 22 s + overhead fits 0.2 h, 9 does not
    assert "training images" in refusal[0]
    assert "train.num_repeats" not in refusal[0]  # already 1: nothing to lower
    assert not (Path(plan.output_dir) / "double_invocations.jsonl").exists()
    # the run folder says so (pod.sh reads it: running again cannot help)
    recorded = json.loads(plan.status_json.read_text())
    assert recorded["state"] == "refused" and recorded["reason"] == refusal[0].removeprefix("training refused: ")
    # a budget below the fixed overhead (model loading, caching, saving) has nothing to suggest but itself
    tiny = double_config(tmp_path, max_gpu_hours=0.001, sample_every_n_epochs=0)
    code, text = run(plan, tiny, tmp_path / "train.log", env=double_env())
    assert code != 0
    assert "raise train.max_gpu_hours" in text


def test_without_gpu_the_stage_stops_ready_and_succeeds(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    cfg = double_config(tmp_path, sd_scripts="", base_model="")
    plan = prepare(tmp_path, cfg)
    env = {"PATH": str(tmp_path / "empty-bin"), "CUDA_VISIBLE_DEVICES": ""}
    status = tmp_path / "status.json"
    code, text = run(plan, cfg, tmp_path / "train.log", status_path=status, env=env)
    assert code == 0
    record = json.loads(status.read_text())
    assert record["state"] == "ready"
    assert any("GPU" in m for m in record["missing"]) and any("train.sd_scripts" in m for m in record["missing"])
    assert (Path(plan.run_dir) / "READY").is_file()
    assert any(line.startswith("training estimate") for line in text.splitlines())
    ready_lines = [line for line in text.splitlines() if line.startswith("training is ready in")]
    # no run's command in the environment: the setup's snakemake, which is not on PATH
    assert len(ready_lines) == 1 and ready_lines[0].endswith("fix that and run `.venv/bin/snakemake --cores 2 train`")
    assert not plan.final_lora.exists()
    # started by Snakemake (common.smk sets LIKENESS_COMMAND): the run's own command, options kept, for `train`
    run_command = ".venv/bin/snakemake --profile profiles/slurm results/lora/x.json --config select='{top_n: 5}'"
    env = {**env, "LIKENESS_COMMAND": run_command}
    code, text = run(plan, cfg, tmp_path / "train2.log", status_path=status, env=env)
    assert code == 0
    ready_lines = [line for line in text.splitlines() if line.startswith("training is ready in")]
    expected = ".venv/bin/snakemake train --profile profiles/slurm --config 'select={top_n: 5}'"
    assert len(ready_lines) == 1 and ready_lines[0].endswith(f"fix that and run `{expected}`"), ready_lines


def test_readiness_fingerprint_names_what_is_missing(tmp_path: Path) -> None:
    cfg = double_config(tmp_path, sd_scripts=str(tmp_path / "nowhere"))
    missing = readiness.missing_for_launch(settings(cfg), env={"LIKENESS_ALLOW_NO_GPU": "1"})
    assert missing == [f"train.sd_scripts {str(tmp_path / 'nowhere')!r} has no sdxl_train_network.py"]
    ok = readiness.missing_for_launch(settings(double_config(tmp_path)), {"LIKENESS_ALLOW_NO_GPU": "1"})
    assert ok == []
    assert readiness.base_model_problem("stabilityai/stable-diffusion-xl-base-1.0") is None
    assert "does not exist" in (readiness.base_model_problem(str(tmp_path / "missing.safetensors")) or "")


def test_cli_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 1)
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  batch_size: 0\n")
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "likeness.train.launch", "--configfile", str(config), "--dataset",
         str(tmp_path / "dataset"), "--trigger", TRIGGER, "--log", str(tmp_path / "l.log"),
         "--status", str(tmp_path / "s.json"), "--runs-root", str(tmp_path / "runs")],
        capture_output=True, text=True, env=double_env(), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "train.batch_size" in result.stderr
    assert "train.batch_size" in (tmp_path / "l.log").read_text()  # the job's log says it too


def test_no_usable_images_is_one_readable_error(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2, captions=False)
    with pytest.raises(LikenessError) as error:
        prepare(tmp_path, double_config(tmp_path))
    assert "no usable training images" in str(error.value) and "2 excluded" in str(error.value)


def test_dry_run_message_is_safe_for_a_rule_message(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 3)
    cfg = double_config(tmp_path, sample_prompts=["{trigger} {class_word}"], max_gpu_hours=0.01)
    message = runplan.dry_run(settings(cfg), tmp_path / "dataset", max_images=None, runs_root=tmp_path).message
    formatted = message.format(resources=types.SimpleNamespace(runtime=7))  # what Snakemake does with a message
    assert formatted.endswith("runtime=7 min")
    assert "3 images in" in formatted and "9 steps" in formatted
    assert "WARNING" in formatted and "max_gpu_hours" in formatted  # the budget warning shows in the dry run


# --- the train rule's readiness param -------------------------------------------------------------------------


def _status(path: Path, plan: runplan.RunPlan, state: str, readiness: str) -> None:
    path.write_text(
        json.dumps({"state": state, "run_id": plan.run_id, "run_dir": plan.run_dir, "readiness": readiness})
    )


def test_readiness_param_keeps_a_finished_training_finished(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path)
    plan = prepare(tmp_path, cfg)
    status = tmp_path / "status.json"
    gpu = {"LIKENESS_ALLOW_NO_GPU": "1"}
    no_gpu = {"CUDA_VISIBLE_DEVICES": "", "PATH": str(tmp_path / "empty-bin")}
    # nothing ran yet: what the launch depends on here
    assert readiness.readiness_param(settings(cfg), status, gpu) == st.LAUNCHABLE
    assert readiness.readiness_param(settings(cfg), status, no_gpu) == "missing: no GPU found (nvidia-smi -L)"
    # done with a GPU: without one, or without the base model, the value the job ran with comes back
    _status(status, plan, "done", st.LAUNCHABLE)
    assert readiness.readiness_param(settings(cfg), status, no_gpu) == st.LAUNCHABLE
    Path(cfg["base_model"]).unlink()
    assert readiness.readiness_param(settings(cfg), status, gpu) == st.LAUNCHABLE


def test_readiness_param_plans_a_ready_run_again_when_it_can_go_on(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path)
    plan = prepare(tmp_path, cfg)
    status = tmp_path / "status.json"
    recorded = "missing: no GPU found (nvidia-smi -L)"
    _status(status, plan, "ready", recorded)
    no_gpu = {"CUDA_VISIBLE_DEVICES": "", "PATH": str(tmp_path / "empty-bin")}
    assert readiness.readiness_param(settings(cfg), status, no_gpu) == recorded  # still stuck: nothing to do
    assert readiness.readiness_param(settings(cfg), status, {"LIKENESS_ALLOW_NO_GPU": "1"}) == st.LAUNCHABLE
    # submitted to a cluster: this machine's GPU does not count, the node's does
    assert readiness.readiness_param(settings({**cfg, "submit": True}), status, no_gpu) == st.LAUNCHABLE
    # the LoRA appeared in the run folder (trained on a rented GPU, output/ copied back): a value no job
    # recorded, so the train job runs once and records it, even where no GPU is
    load_double().write_safetensors(plan.final_lora, 3)
    assert readiness.readiness_param(settings(cfg), status, no_gpu) == readiness.COPIED_BACK != recorded
    assert readiness.readiness_param(settings(cfg), status, {"LIKENESS_ALLOW_NO_GPU": "1"}) == readiness.COPIED_BACK
    assert calibration.finished_elsewhere(settings(cfg), status)
    assert not calibration.finished_elsewhere(
        settings({**cfg, "network_dim": 8}), status
    )  # another config: another run
    # once the job recorded it with that value, the value stays (nothing is planned again)
    _status(status, plan, "done", readiness.COPIED_BACK)
    assert readiness.readiness_param(settings(cfg), status, no_gpu) == readiness.COPIED_BACK


def test_a_run_finished_elsewhere_is_recorded_done_by_the_train_job_with_its_measured_speed(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path, max_train_epochs=1)
    plan = prepare(tmp_path, cfg)
    status = tmp_path / "status.json"
    _status(status, plan, "ready", "missing: no GPU found (nvidia-smi -L)")  # at home: no GPU
    # elsewhere (the same run folder, its own calibration table and status), then output/ is back
    assert run(plan, cfg, tmp_path / "pod.log", status_path=tmp_path / "pod_status.json", env=double_env())[0] == 0
    measured = json.loads(plan.measured_json.read_text())
    assert measured["gpu"] == "CPU" and measured["seconds_per_step"] > 0
    assert calibration.finished_elsewhere(settings(cfg), status, [tmp_path / "dataset"])
    # at home the run folder's own status still says 'ready': only output/ came back
    st.write_run_status(plan, None, "ready", missing=["no GPU found (nvidia-smi -L)"])
    home_calibration = tmp_path / "home_calibration.tsv"
    no_gpu = {"CUDA_VISIBLE_DEVICES": "", "PATH": str(tmp_path / "empty-bin")}
    code, log = run(
        plan, cfg, tmp_path / "home.log", status_path=status, calibration_path=home_calibration, env=no_gpu,
        readiness=readiness.COPIED_BACK,
    )  # fmt: skip
    assert code == 0, log
    record = json.loads(status.read_text())
    assert record["state"] == "done" and record["run_id"] == plan.run_id and record["finished_elsewhere"]
    assert record["readiness"] == readiness.COPIED_BACK  # what the rule's metadata holds
    rows = est.load_calibration(home_calibration)
    assert [(r.gpu, r.seconds_per_step) for r in rows] == [("CPU", measured["seconds_per_step"])]
    assert "avr_loss" in log  # the training's own log, for the loss curve
    assert f"training {plan.run_id} finished elsewhere: {plan.final_lora} recorded as done" in log
    # once only: the speed is not imported twice
    again = run(plan, cfg, tmp_path / "again.log", status_path=status, calibration_path=home_calibration, env=no_gpu)
    assert again[0] == 0
    assert len(est.load_calibration(home_calibration)) == 1


def test_declared_inputs_are_the_dataset_tables_and_the_regularisation_folder(tmp_path: Path) -> None:
    cfg = double_config(tmp_path)
    assert runplan.declared_inputs(settings(cfg), "m", "c") == {"manifest": "m", "captions_table": "c"}
    with_reg = runplan.declared_inputs(settings({**cfg, "reg_images": str(tmp_path / "reg")}), "m", "c")
    assert with_reg["reg_images"] == str(tmp_path / "reg")
    assert str(cfg["base_model"]) not in runplan.declared_inputs(settings(cfg), "m", "c").values()


def test_captions_in_their_own_folder_give_the_same_run(tmp_path: Path) -> None:
    make_images(tmp_path / "together", 3)
    beside = prepare(tmp_path, double_config(tmp_path), tmp_path / "together")
    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    for path in (tmp_path / "together").iterdir():
        (captions if path.suffix == ".txt" else images).joinpath(path.name).write_bytes(path.read_bytes())
    cfg = settings(double_config(tmp_path))
    apart = runplan.prepare_run(
        cfg, images, captions, trigger=TRIGGER, class_word=CLASS_WORD, runs_root=tmp_path / "runs"
    )
    assert apart.run_id == beside.run_id  # the same bytes in the run's dataset/, so the same run
    assert sorted(p.name for p in (Path(apart.run_dir) / "dataset").iterdir()) == sorted(
        p.name for p in (tmp_path / "together").iterdir()
    )


def _mask_one_image(image: Path) -> Path:
    """The selection's form of a masked face: the crop as a PNG whose alpha channel is the loss mask."""
    import cv2
    import numpy as np
    from likeness.select import masks

    side = cv2.imread(str(image)).shape[0]
    alpha = masks.alpha_channel(masks.loss_weights(side, (80, 80, 176, 176), [(190, 60, 250, 140)]))
    png = image.with_suffix(".png")
    png.write_bytes(masks.masked_png(str(image), alpha))
    image.unlink()
    assert np.asarray(alpha).min() == 0
    return png


def test_masked_loss_only_when_an_image_carries_a_mask_and_the_steps_stay_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    plain_dir, masked_dir = tmp_path / "plain", tmp_path / "masked"
    make_images(plain_dir, 3)
    make_images(masked_dir, 3)
    _mask_one_image(sorted(masked_dir.glob("*.jpg"))[1])
    cfg = double_config(tmp_path)
    plain = prepare(tmp_path, cfg, plain_dir)
    masked = prepare(tmp_path, cfg, masked_dir)
    plain_train, masked_train = (tomllib.loads(Path(p.train_toml).read_text()) for p in (plain, masked))
    plain_data, masked_data = (tomllib.loads(Path(p.dataset_toml).read_text()) for p in (plain, masked))
    assert "masked_loss" not in plain_train["training"]
    assert "alpha_mask" not in plain_data["datasets"][0]["subsets"][0]
    assert masked_train["training"]["masked_loss"] is True
    assert masked_data["datasets"][0]["subsets"][0]["alpha_mask"] is True
    # The PNG has the JPEG's size: the same buckets and step count, as the double (sd-scripts' counting) says.
    assert masked.train_sizes == plain.train_sizes
    masked_estimate = runplan.plan_estimate(masked, settings(cfg), None)
    assert masked_estimate.total_steps == runplan.plan_estimate(plain, settings(cfg), None).total_steps
    monkeypatch.chdir(masked.run_dir)  # the TOML names the dataset relative to the run folder
    flat = {key: value for table in masked_train.values() for key, value in table.items()}
    assert load_double().count_steps_per_epoch(masked_data, flat) * masked_estimate.steps.epochs == (
        masked_estimate.total_steps
    )
    assert sorted(p.name for p in (Path(masked.run_dir) / "dataset").iterdir() if p.suffix == ".png") == [
        "face00001.png"
    ]


def test_a_base_model_that_cannot_be_fetched_is_recorded_as_unavailable(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(
        tmp_path, base_model="stabilityai/stable-diffusion-xl-base-1.0", hub_cache=str(tmp_path / "hub")
    )
    plan = prepare(tmp_path, cfg)
    with pytest.raises(ConfigError, match=r"train\.base_model"):
        run(plan, cfg, tmp_path / "train.log", env=double_env())
    recorded = json.loads(plan.status_json.read_text())
    assert recorded["state"] == "unavailable" and "train.base_model" in recorded["reason"]


def test_a_submitted_job_that_cannot_train_where_it_runs_fails(tmp_path: Path) -> None:
    """train.submit (a Slurm node): no GPU there is a failure with its reason, not a 'ready' success."""
    make_images(tmp_path / "dataset", 2)
    cfg = double_config(tmp_path, submit=True)
    plan = prepare(tmp_path, cfg)
    status = tmp_path / "status.json"
    no_gpu = {"CUDA_VISIBLE_DEVICES": "", "PATH": os.environ["PATH"]}
    code, log = run(plan, cfg, tmp_path / "train.log", status_path=status, env=no_gpu)
    assert code == 1
    assert "training cannot run on this node (no GPU found (nvidia-smi -L)): submit it where a GPU" in log
    assert not status.exists()  # the rule's status keeps only final states; Snakemake records the failure
    assert json.loads(plan.status_json.read_text())["state"] == "unavailable"
    # the same job where the node has what it needs trains
    assert run(plan, cfg, tmp_path / "ok.log", status_path=status, env=double_env())[0] == 0
