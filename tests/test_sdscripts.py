"""likeness.sdscripts: what sd-scripts v0.10.1 loads, how it buckets and counts steps, the names it writes,
the states it saves and the progress it prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from fixtures.training import CLASS_WORD, TRIGGER, load_double, make_images
from likeness.config import validate_section
from likeness.sdscripts import buckets, images, names, progress, states
from likeness.train import runplan

SQUARE_1024 = buckets.bucket_settings(1024, no_upscale=True)


def test_surplus_regularisation_images_are_not_used() -> None:
    # 10 images x 3 repeats = 30; 50 reg images: the first 30 once each, 20 never
    plan = buckets.plan_steps(
        [(1024, 1024)] * 10, num_repeats=3, batch_size=1, gradient_accumulation_steps=1, epochs=1,
        reg_sizes=[(1024, 1024)] * 50, settings=SQUARE_1024,
    )  # fmt: skip
    assert plan.reg_samples == 30 and plan.reg_images_used == 30
    assert plan.steps_per_epoch == 60


def test_regularisation_repeats_round_robin() -> None:
    # 30 train samples, 4 reg images: first pass 1 each (4), then +1 in turn until 30: 8, 8, 7, 7
    assert buckets.reg_repeats(4, 30) == [8, 8, 7, 7]
    assert buckets.reg_repeats(3, 0) == [0, 0, 0]


def test_buckets_without_upscaling() -> None:
    settings = buckets.bucket_settings(1024, no_upscale=True)
    assert buckets.bucket_for(1000, 1000, settings) == (960, 960)  # floor to 64
    assert buckets.bucket_for(1024, 1024, settings) == (1024, 1024)
    # 2048x1024 has twice the allowed area: scaled to 1448.2 x 724.1, rounded to steps -> 1408 x 704
    assert buckets.bucket_for(2048, 1024, settings) == (1408, 704)


def test_buckets_with_upscaling_use_the_predefined_list() -> None:
    settings = buckets.bucket_settings(1024, no_upscale=False)
    assert buckets.bucket_for(512, 512, settings) == (1024, 1024)
    predefined = buckets.predefined_buckets(settings)
    assert all(w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0 for w, h in predefined)
    assert (1024, 1024) in predefined and (256, 1024) in predefined


def test_bucketing_off_puts_everything_in_one_bucket() -> None:
    settings = dataclasses.replace(SQUARE_1024, enable_bucket=False)
    assert {buckets.bucket_for(w, h, settings) for w, h in [(512, 512), (800, 1000)]} == {(1024, 1024)}


def test_bucket_limits_follow_the_resolution() -> None:
    assert buckets.bucket_limits(1024) == (256, 1024)
    assert buckets.bucket_limits(256) == (256, 256)
    assert buckets.bucket_limits(1000) == (256, 1024)


# --- which files sd-scripts loads ---------------------------------------------------------------------------


def test_image_suffixes_are_case_sensitive_as_in_sd_scripts(tmp_path: Path) -> None:
    for name in ("a.Jpg", "b.jpg", "c.JPG", "d.png", ".hidden.jpg", "e.txt", "f.jpeg", "g.gif"):
        cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
        (tmp_path / "x.png").rename(tmp_path / name)
    listing = images.list_folder(tmp_path)
    assert [p.name for p in listing.images] == ["b.jpg", "c.JPG", "d.png", "f.jpeg"]
    assert [p.name for p in listing.ignored] == [".hidden.jpg", "a.Jpg"]  # image-like, never loaded
    note = images.ignored_note(listing, "regularisation") or ""
    assert "a.Jpg" in note and ".hidden.jpg" in note and "case-sensitive" in note


def test_image_sizes_from_headers(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((300, 500, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((64, 32, 3), np.uint8))
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    assert images.image_size(tmp_path / "c.jpg") is None
    assert images.image_sizes(tmp_path) == [(500, 300), (32, 64)]


def test_the_run_counts_what_sd_scripts_loads_and_names_what_it_ignores(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 2)
    reg = tmp_path / "reg"
    make_images(reg, 3, captions=False, seed=4)
    ignored = sorted(reg.iterdir())[0].rename(reg / "ignored.Jpg")
    cfg = validate_section("train", {"reg_images": str(reg), "base_model": "owner/model", "sample_every_n_epochs": 0})
    dataset = tmp_path / "dataset"
    plan = runplan.prepare_run(cfg, dataset, dataset, trigger=TRIGGER, class_word=CLASS_WORD, runs_root=tmp_path / "r")
    assert len(plan.train_sizes) == 2 and len(plan.reg_sizes) == 2  # the .Jpg is not a regularisation image
    assert not (Path(plan.run_dir) / "reg" / ignored.name).exists()
    assert any(ignored.name in reason and "ignored by sd-scripts" in reason for reason in plan.excluded)
    shown = runplan.dry_run(cfg, dataset, max_images=None, runs_root=tmp_path / "r")
    assert any(ignored.name in line and "WARNING" in line for line in shown.lines)


# --- names, states, progress --------------------------------------------------------------------------------


def test_names_sd_scripts_writes() -> None:
    assert names.epoch_model("face", 3) == "face-000003.safetensors"
    assert names.epoch_state("face", 3) == "face-000003-state"
    assert names.final_model("face") == "face.safetensors" and names.final_state("face") == "face-state"
    assert names.epoch_of_model("face", "face-000012.safetensors") == 12
    assert names.epoch_of_model("face", "face.safetensors") is None
    assert names.epoch_of_state("face", "face-000002-state") == 2
    assert names.latent_cache("a1", 1024, 768) == "a1_1024x0768_sdxl.npz"
    assert names.sequential_names(2) == ["im_000001.png", "im_000002.png"]
    sample = names.SAMPLE_NAME.match("face_e000003_01_20260101000000_1001.png")
    assert sample and (sample["epoch"], sample["number"], sample["prompt"]) == ("e", "000003", "01")
    assert names.SAMPLE_NAME.match("face_000150_00_20260101000000.png")["epoch"] is None  # by step


def test_resume_state_skips_a_half_written_state(tmp_path: Path) -> None:
    double = load_double()
    double.write_state(tmp_path / names.epoch_state("face", 1), 1, 10)
    double.write_state(tmp_path / names.epoch_state("face", 2), 2, 20)
    (tmp_path / names.epoch_state("face", 2) / "random_states_0.pkl").unlink()  # killed while saving
    assert states.find_resume_state(tmp_path, "face") == (tmp_path / "face-000001-state", 1)
    assert states.state_epoch(tmp_path / "face-000002-state") is None


def test_saved_epochs_name_the_final_file_as_the_last_epoch(tmp_path: Path) -> None:
    double = load_double()
    for name in ("face-000001.safetensors", "face.safetensors", "other-000001.safetensors"):
        double.write_safetensors(tmp_path / name, 1)
    assert [e for e, _ in states.saved_epochs(tmp_path, "face", 2)] == [1, 2]


def test_progress_bar_and_loss() -> None:
    text = (
        "epoch 1/2\r\nsteps:  50%|#####     | 1/2 [00:01<00:01,  1.00s/it, avr_loss=0.25]"
        "\rsteps: 100%|##########| 2/2 [00:01<00:00,  2.00it/s, avr_loss=0.2]\n"
    )
    assert progress.parse_epoch("epoch 1/2") == "1/2"
    assert progress.measured_seconds_per_step(text) == 0.5
    assert progress.loss_by_step(text) == [(1, 0.25), (2, 0.2)]
    parsed = progress.parse_progress(progress.fragments(text)[2])
    assert parsed is not None and (parsed.done, parsed.total, parsed.seconds_per_step) == (1, 2, 1.0)
