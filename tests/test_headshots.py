"""likeness.train.headshots and best_epoch: prompt lines, sd-scripts' generation command, epochs, the best epoch."""

from __future__ import annotations

import json
from pathlib import Path

from likeness.config import validate_section
from likeness.joblog import run_logged, run_script
from likeness.sdscripts.options import gen_options
from likeness.train import best_epoch, headshots
from likeness.train.best_epoch import Scored
from likeness.train.runplan import RunPlan


def known_options() -> frozenset[str]:
    return gen_options()


def test_the_option_list_is_the_releases_parser() -> None:
    options = known_options()
    assert len(options) == 78
    assert {"--ckpt", "--from_file", "--network_weights", "--sequential_file_name", "--W", "--H"} <= options


def test_prompt_lines_fill_the_trigger_and_fix_seeds_and_negative() -> None:
    cfg = validate_section(
        "train",
        {
            "headshot_prompts": ["{trigger} {class_word}, studio", "portrait --w 64 in grey", "  "],
            "headshot_seed": 10,
            "headshot_negative_prompt": "blurry",
        },
    )
    lines = headshots.prompt_lines(cfg, "ohwx", "woman")
    assert lines == [
        "ohwx woman, studio --d 10 --n blurry",
        "ohwx, portrait -w 64 in grey --d 11 --n blurry",  # " --" would start an option: defused
    ]


def test_default_prompts_are_six_headshots_with_the_trigger() -> None:
    lines = headshots.prompt_lines(validate_section("train", {}), "ohwx", "man")
    assert len(lines) == 6
    assert all(line.startswith("ohwx man, ") and "head and shoulders" in line and " --n " in line for line in lines)


def test_generation_command_uses_only_real_options(tmp_path: Path) -> None:
    cfg = validate_section(
        "train",
        {"sd_scripts": str(tmp_path), "launcher": "", "python": "/usr/bin/python3", "mixed_precision": "bf16"}
        | {"extra": {"tokenizer_cache_dir": "/tok"}, "headshot_size": 512},
    )
    command = headshots.gen_command(
        cfg,
        base_model="owner/model",
        lora=tmp_path / "a.safetensors",
        outdir=tmp_path / "out",
        prompts_file=tmp_path / "p.txt",
    )
    assert command[:2] == ["/usr/bin/python3", str(tmp_path.resolve() / "sdxl_gen_img.py")]
    assert {arg for arg in command if arg.startswith("--")} <= known_options()
    assert command[command.index("--W") + 1] == "512" and "--bf16" in command
    assert command[command.index("--tokenizer_cache_dir") + 1] == "/tok"
    assert command[command.index("--ckpt") + 1] == "owner/model"  # a repo id stays as it is


def _plan(tmp_path: Path, epochs: int) -> RunPlan:
    output = tmp_path / "output"
    output.mkdir()
    return RunPlan(
        run_id="r1", run_dir=str(tmp_path), output_name="me", trigger="ohwx", class_word="woman",
        train_sizes=[], reg_sizes=[], sample_steps=[], excluded=[], train_cfg={"max_train_epochs": epochs},
    )  # fmt: skip


def test_saved_epochs_are_the_per_epoch_files_and_the_final_one(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 4)
    for name in ("me-000001.safetensors", "me-000003.safetensors", "me.safetensors", "me-x.safetensors"):
        (Path(plan.output_dir) / name).write_bytes(b"x")
    assert [e for e, _ in headshots.run_epochs(plan)] == [1, 3, 4]
    assert headshots.run_epochs(plan)[-1][1].name == "me.safetensors"


def test_best_epoch_is_the_lowest_median_and_unscored_images_count_as_misses() -> None:
    scores = {
        1: [Scored("a", 0.5, ""), Scored("b", 0.4, ""), Scored("c", None, "no face found")],
        2: [Scored("a", 0.2, ""), Scored("b", 0.9, ""), Scored("c", 0.25, "")],
        3: [Scored("a", None, "2 faces found")],
        # the best single headshot of all, but three of four showed no face: its median is a miss
        4: [Scored("a", 0.1, "")] + [Scored(x, None, "no face found") for x in "bcd"],
    }
    best, medians = best_epoch.choose_epoch(scores, miss=1.2)
    assert best == 2 and medians == {1: 0.5, 2: 0.25, 3: None, 4: 1.2}
    assert best_epoch.choose_epoch({1: [Scored("a", 0.3, "")], 2: [Scored("a", 0.3, "")]}, 1.2)[0] == 2  # tie: later
    assert best_epoch.choose_epoch({1: [Scored("a", None, "no face found")]}, 1.2)[0] is None
    # equal medians: the epoch with more scored headshots wins over the later one
    tied = {
        1: [Scored("a", 1.2, ""), Scored("b", 1.2, ""), Scored("c", 0.2, "")],
        2: [Scored("a", None, "no face found"), Scored("b", None, "no face found"), Scored("c", 0.2, "")],
    }
    assert best_epoch.choose_epoch(tied, 1.2) == (1, {1: 1.2, 2: 1.2})
    assert best_epoch.miss_distance(0.6) == 1.2


def test_lora_file_names_are_safe() -> None:
    assert best_epoch.lora_stem("ohwx") == "ohwx"
    assert best_epoch.lora_stem("sks person/../x") == "sks_person_.._x"


def test_headshots_wait_for_the_training_and_say_what_is_missing(tmp_path: Path, capsys) -> None:
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"state": "ready"}))
    out = tmp_path / "headshots.json"
    code = run_script(
        tmp_path / "l", headshots.headshots_stage, validate_section("train", {}), status,
        trigger="ohwx", class_word="woman", status_path=out,
    )  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["state"] == "waiting"
    assert "headshots wait for the training (its state: ready)" in capsys.readouterr().out

    plan = _plan(tmp_path / "run", 2) if (tmp_path / "run").mkdir() is None else None
    (Path(plan.output_dir) / "me.safetensors").write_bytes(b"x")
    (tmp_path / "run" / "plan.json").write_text(json.dumps(plan.__dict__))
    status.write_text(json.dumps({"state": "done", "run_dir": str(tmp_path / "run")}))
    cfg = {"sd_scripts": str(tmp_path), "launcher": "", "base_model": str(status)}
    code = run_script(
        tmp_path / "l", headshots.headshots_stage, validate_section("train", cfg), status,
        trigger="ohwx", class_word="woman", status_path=out, env={},
    )  # fmt: skip
    record = json.loads(out.read_text())
    assert code == 0 and record["state"] == "ready"
    assert "no GPU found (nvidia-smi -L)" in record["missing"]
    assert any("has no sdxl_gen_img.py" in m for m in record["missing"])
    # no command of a run in the environment (the stage called directly): the setup's own snakemake
    assert "fix that and run `.venv/bin/snakemake --cores 2 best_lora`" in capsys.readouterr().out
    # inside a run: the command it was started with (profile kept), asking for the best epoch's LoRA
    code = run_script(
        tmp_path / "l", headshots.headshots_stage, validate_section("train", cfg), status,
        trigger="ohwx", class_word="woman", status_path=out,
        env={"LIKENESS_COMMAND": ".venv/bin/snakemake --profile profiles/slurm headshots"},
    )  # fmt: skip
    assert code == 0
    assert "fix that and run `.venv/bin/snakemake best_lora --profile profiles/slurm`" in capsys.readouterr().out


def test_best_lora_without_the_identity_check_takes_the_last_epoch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LIKENESS_COMMAND", raising=False)  # the hint in the record: no run command here
    loras = {e: tmp_path / f"e{e}.safetensors" for e in (1, 2)}
    for epoch, path in loras.items():
        path.write_bytes(f"lora {epoch}".encode())
    shots = tmp_path / "headshots.json"
    shots.write_text(
        json.dumps(
            {
                "state": "done",
                "run_id": "r1",
                "prompts": ["p"],
                "epochs": [{"epoch": e, "lora": str(p), "images": []} for e, p in loras.items()],
            }
        )
    )
    identity_json = tmp_path / "identity.json"
    identity_json.write_text(json.dumps({"enabled": False}))
    out = tmp_path / "lora" / "ohwx.json"
    record = run_logged(
        tmp_path / "log", best_epoch.best_lora_stage, shots, identity_json, validate_section("select", {}),
        trigger="ohwx", class_word="woman", out_json=out,
    )  # fmt: skip
    assert record["epoch"] == 2 and "identity check is off" in record["why"]
    assert (tmp_path / "lora" / "ohwx.safetensors").read_bytes() == b"lora 2"
    written = json.loads(out.read_text())
    assert written["epoch"] == 2
    assert (written["trigger"], written["class_word"], written["prompts"]) == ("ohwx", "woman", ["p"])
    # headshots rendered by an earlier likeness recorded no base model: null, and the record says why
    assert written["base_model"]["sha256"] is None and "not recorded" in written["base_model"]["sha256_from"]
    assert (
        "(run `.venv/bin/snakemake --cores 2 best_lora --forcerun headshots`)" in written["base_model"]["sha256_from"]
    )

    # the headshots' record names the model the run trained on: the LoRA's record carries it unchanged
    base = {"name": "me/sdxl", "file": "m.safetensors", "revision": "abc", "sha256": "cd" * 32, "sha256_from": "x"}
    shots.write_text(json.dumps({**json.loads(shots.read_text()), "base_model": base}))
    run_logged(
        tmp_path / "log", best_epoch.best_lora_stage, shots, identity_json, validate_section("select", {}),
        trigger="ohwx", class_word="woman", out_json=out,
    )  # fmt: skip
    assert json.loads(out.read_text())["base_model"] == base


def test_best_lora_waits_for_headshots(tmp_path: Path) -> None:
    shots = tmp_path / "headshots.json"
    shots.write_text(json.dumps({"state": "waiting"}))
    out = tmp_path / "ohwx.json"
    record = run_logged(
        tmp_path / "log", best_epoch.best_lora_stage, shots, tmp_path / "none.json", validate_section("select", {}),
        trigger="ohwx", class_word="", out_json=out,
    )  # fmt: skip
    assert record["state"] == "waiting" and not out.with_suffix(".safetensors").exists()


def test_headshots_alone_over_the_budget_are_refused(tmp_path: Path, capsys) -> None:
    plan = _plan(tmp_path / "run", 2) if (tmp_path / "run").mkdir() is None else None
    plan.train_sizes = [(1024, 1024)] * 10
    plan.train_cfg = validate_section("train", {"max_train_epochs": 2, "gpu": "RTX 3060"}).as_dict()
    (Path(plan.output_dir) / "me.safetensors").write_bytes(b"x")
    (Path(plan.output_dir) / "me-000001.safetensors").write_bytes(b"x")
    (tmp_path / "run" / "plan.json").write_text(json.dumps(plan.__dict__))
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"state": "done", "run_dir": str(tmp_path / "run")}))
    (tmp_path / "sdxl_gen_img.py").write_text("")
    cfg = {
        "sd_scripts": str(tmp_path),
        "launcher": "",
        "base_model": str(status),
        "gpu": "RTX 3060",
        "max_gpu_hours": 0.01,
        "headshot_steps": 50,
    }
    out = tmp_path / "headshots.json"
    code = run_script(
        tmp_path / "l", headshots.headshots_stage, validate_section("train", cfg), status,
        trigger="ohwx", class_word="woman", status_path=out, env={"LIKENESS_ALLOW_NO_GPU": "1"},
    )  # fmt: skip
    assert code == 2 and json.loads(out.read_text())["state"] == "refused"
    line = capsys.readouterr().out
    assert "headshots refused: estimated" in line and "for 2 epochs' headshots exceeds train.max_gpu_hours 0.01" in line
