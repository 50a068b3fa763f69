"""Estimates against hand-computed cases (sd-scripts v0.10.1 step rules) and the GPU speed table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from likeness.config import validate_section
from likeness.sdscripts import images
from likeness.train import estimate as est
from likeness.train import gpus, overheads, runplan


def cfg(**overrides: object) -> dict:
    base = validate_section(
        "train", {"base_model": "owner/model", "gpu": "RTX 4090", "sample_every_n_epochs": 0}
    ).as_dict()
    base.update(overrides)
    return base


# --- step counts --------------------------------------------------------------------------------------------


def test_reference_example_without_regularisation() -> None:
    # 40 crops x 10 repeats = 400 samples; batch 2 -> 200 steps per epoch; 10 epochs -> 2000 steps
    result = est.estimate(cfg(num_repeats=10, batch_size=2, max_train_epochs=10), 40)
    assert result.steps.train_samples == 400
    assert result.steps_per_epoch == 200
    assert result.total_steps == 2000


def test_reference_example_with_regularisation() -> None:
    # 400 samples balanced by 400 regularisation samples = 800; batch 2 -> 400 per epoch; x10 = 4000
    result = est.estimate(cfg(num_repeats=10, batch_size=2, max_train_epochs=10), 40, 100)
    assert result.steps.samples_per_epoch == 800
    assert result.steps.reg_images_used == 100  # 100 images, each used 4 times
    assert result.steps_per_epoch == 400
    assert result.total_steps == 4000


def test_gradient_accumulation_rounds_up() -> None:
    # 400 samples, batch 2 -> 200 batches; accumulation 3 -> ceil(200 / 3) = 67 steps; 5 epochs = 335
    result = est.estimate(cfg(num_repeats=10, batch_size=2, gradient_accumulation_steps=3, max_train_epochs=5), 40)
    assert result.steps.batches_per_epoch == 200
    assert result.steps_per_epoch == 67
    assert result.total_steps == 335


def test_batches_are_counted_per_bucket() -> None:
    # 3 crops at 1024 and 2 at 768, 3 repeats: buckets of 9 and 6; batch 2 -> 5 + 3 = 8 batches
    sizes = [(1024, 1024)] * 3 + [(768, 768)] * 2
    result = est.estimate(cfg(num_repeats=3, batch_size=2, max_train_epochs=1), sizes)
    assert result.steps.buckets == {(768, 768): 6, (1024, 1024): 9}
    assert result.steps_per_epoch == 8


# --- time, cost, budget -------------------------------------------------------------------------------------


def test_time_is_steps_times_table_speed_plus_overheads() -> None:
    result = est.estimate(cfg(num_repeats=10, batch_size=1, max_train_epochs=10, gpu_hourly_cost=0.8), 40)
    assert result.seconds_per_step == pytest.approx(1.45)  # RTX 4090, 1024 px, batch 1
    assert "bmaltais/kohya_ss #1288" in result.speed_source
    assert result.total_seconds == pytest.approx(4000 * 1.45 + sum(result.overhead_seconds.values()))
    assert {"latent caching", "saving", "model loading"} <= set(result.overhead_seconds)
    assert result.cost == pytest.approx(result.total_hours * 0.8)
    assert result.runtime_minutes >= math.ceil(result.total_seconds / 60)
    lines = result.format_lines()
    assert any("4000 steps" in line for line in lines)
    (cost,) = [line for line in lines if line.strip().startswith("cost:")]
    assert cost.endswith(f"x 0.8 USD/h = {result.cost:.2f} USD")  # train.currency's default


def test_cost_line_names_the_configured_currency() -> None:
    result = est.estimate(cfg(gpu_hourly_cost=0.5, currency="EUR"), 40)
    (cost,) = [line for line in result.format_lines() if line.strip().startswith("cost:")]
    assert cost.endswith(f"x 0.5 EUR/h = {result.cost:.2f} EUR")


def test_batch_sizes_between_table_rows_are_interpolated() -> None:
    table = est.load_speed_table()
    exact, _, _ = est.lookup_speed("RTX 4090", resolution=1024, batch_size=8, gradient_checkpointing=True, table=table)
    assert exact == pytest.approx(3.0)
    middle, source, _ = est.lookup_speed(
        "RTX 4090", resolution=1024, batch_size=4, gradient_checkpointing=True, table=table
    )
    assert middle == pytest.approx(1.45 + (3.0 - 1.45) * 3 / 7)
    assert "interpolated" in source


def test_resolution_and_checkpointing_scale_the_figure() -> None:
    table = est.load_speed_table()
    seconds, _, _ = est.lookup_speed("L40S", resolution=512, batch_size=1, gradient_checkpointing=True, table=table)
    assert seconds == pytest.approx(1.029 / 4)
    only_no = [row for row in table if row.gpu == "RTX 3090"]
    seconds, source, _ = est.lookup_speed(
        "RTX 3090", resolution=1024, batch_size=1, gradient_checkpointing=True, table=only_no
    )
    assert seconds == pytest.approx(1.55 * est.GRADIENT_CHECKPOINTING_FACTOR)
    assert "gradient checkpointing" in source


def test_table_covers_the_required_gpus_with_sources() -> None:
    table = est.load_speed_table()
    rented = {"RTX 5090", "RTX 4080", "RTX A6000", "RTX A5000", "L4", "A10G", "A40", "H200"}
    assert {"RTX 3090", "RTX 4090", "A100", "H100", "L40S"} | rented <= {row.gpu for row in table}
    assert all(row.source.strip() and row.seconds_per_step > 0 and row.vram_gb >= 0 for row in table)
    # every row derived from another says so, and names the row it scales
    derived = [row for row in table if row.source.startswith("estimate:")]
    assert {row.gpu for row in derived} >= rented
    assert all(" row x " in row.source for row in derived)
    # each memory class borrows the speed of a row that exists
    assert {c.like for c in gpus.load_classes()} <= {row.gpu for row in table}


def test_a_gpu_with_a_new_row_gets_an_estimate_that_says_where_it_comes_from() -> None:
    result = est.estimate(cfg(gpu="RTX 5090"), 40)
    print("\n" + "\n".join(result.format_lines()))
    assert result.gpu == "RTX 5090" and result.seconds_per_step == pytest.approx(1.45)
    assert "estimate: RTX 4090 row x 1.0" in result.speed_source
    (note,) = [n for n in result.notes if "RTX 5090 figure is an estimate" in n]
    assert "RTX Blackwell" in note and "calibrate" in note  # the published figure it was scaled by
    assert any(note in line for line in result.format_lines())


def test_an_unknown_gpu_name_is_priced_by_its_memory_class_with_a_note() -> None:
    result = est.estimate(cfg(gpu="Voodoo 2"), 10)  # no row, memory unknown: the 24 GB class
    print("\n" + "\n".join(result.format_lines()))
    (note,) = [n for n in result.notes if "Voodoo 2" in n]
    assert "no row in resources/gpu_speeds.tsv" in note and "24 GB class" in note and "RTX A5000" in note
    assert result.seconds_per_step == pytest.approx(1.84 * est.GRADIENT_CHECKPOINTING_FACTOR) and result.total_hours > 0
    assert any(note in line for line in result.format_lines())
    big = est.estimate(cfg(gpu="Acme Tensor 96GB"), 10)  # a size in the name picks the class
    assert "80 GB class" in " ".join(big.notes) and big.speed_source.startswith("table: A100")


def test_auto_prices_the_gpu_nvidia_smi_reports() -> None:
    output = "NVIDIA GeForce RTX 4090, 24564\nNVIDIA GeForce RTX 4090, 24564\n"
    detected = gpus.parse_gpu_query(output)
    assert detected[0] == gpus.DetectedGpu("NVIDIA GeForce RTX 4090", 24.0) and len(detected) == 2
    result = est.estimate(cfg(gpu="auto"), 10, detected=detected)
    assert result.gpu == "RTX 4090" and result.seconds_per_step == pytest.approx(1.45)
    assert any("nvidia-smi reports NVIDIA GeForce RTX 4090" in n for n in result.notes)


def test_auto_with_an_unknown_name_gives_an_estimate_with_a_note() -> None:
    detected = gpus.parse_gpu_query("NVIDIA RTX PRO 6000 Blackwell Workstation Edition, 97887\n")
    result = est.estimate(cfg(gpu="auto"), 10, detected=detected)
    print("\n" + "\n".join(result.format_lines()))
    assert result.gpu == "RTX PRO 6000 Blackwell Workstation Edition"
    (note,) = [n for n in result.notes if "nvidia-smi" in n]
    assert "nvidia-smi reports NVIDIA RTX PRO 6000" in note and "95.6 GB" in note and "80 GB class" in note
    assert result.speed_source.startswith("table: A100") and result.total_hours > 0


def test_auto_without_a_visible_gpu_assumes_one_and_says_so() -> None:
    here = est.estimate(cfg(gpu="auto"), 10, detected=[])
    assert here.gpu == gpus.AUTO_ASSUMED_GPU and "no GPU visible here" in here.notes[0]
    # submitted to Slurm: the login node's GPU (if any) is not the one that trains
    submitted = est.estimate(cfg(gpu="auto", submit=True), 10)
    assert "the training machine's GPU is not visible here" in submitted.notes[0]


@pytest.mark.parametrize(
    ("reported", "row"),
    [
        ("NVIDIA GeForce RTX 3090 Ti", "RTX 3090 Ti"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("NVIDIA GeForce RTX 5090", "RTX 5090"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("NVIDIA A40", "A40"),
        ("NVIDIA RTX 6000 Ada Generation", None),
        ("NVIDIA A10", None),
    ],
)
def test_reported_names_match_their_table_rows(reported: str, row: str | None) -> None:
    assert gpus.match_table_name(reported, est.known_gpus(est.load_speed_table())) == row


# --- calibration with judgement -----------------------------------------------------------------------------


def _measured(seconds: float, steps: int | None = 100, settings: str | None = None, **changes) -> est.SpeedRow:
    settings = est.speed_settings(cfg()) if settings is None else settings
    row = est.SpeedRow("RTX 4090", 0, 1024, 1, "yes", seconds, "measured: run abc, 2026-12-06", "", steps, settings)
    return dataclasses.replace(row, **changes)


def test_an_implausible_calibration_is_kept_flagged_and_not_used(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.tsv"
    est.record_calibration(calibration, _measured(0.02))  # the double-speed "measurement"
    assert [r.seconds_per_step for r in est.load_calibration(calibration)] == [0.02]  # kept
    result = est.estimate(cfg(), 10, calibration_path=calibration)
    print("\n" + result.format_lines()[2])
    assert result.seconds_per_step == pytest.approx(1.45)  # the table's figure
    assert result.speed_source.startswith("table: RTX 4090")
    assert "not used: measured 0.02 s/step (measured: run abc, 2026-12-06, 100 steps)" in result.speed_source
    assert (
        "0.014x the table's 1.45 s/step" in result.speed_source
        and "outside the plausible 0.25x-4x" in result.speed_source
    )


def test_a_calibration_within_the_band_is_used(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.tsv"
    est.record_calibration(calibration, _measured(1.2, peak_memory_gb=17.5))
    (row,) = est.load_calibration(calibration)
    assert (row.steps, row.settings, row.peak_memory_gb) == (100, est.speed_settings(cfg()), 17.5)  # stored with it
    result = est.estimate(cfg(), 10, calibration_path=calibration)
    assert result.seconds_per_step == pytest.approx(1.2)
    assert result.speed_source.startswith("measured: RTX 4090") and "not used" not in result.speed_source


def test_a_calibration_needs_enough_steps_and_the_same_settings(tmp_path: Path) -> None:
    short = tmp_path / "short.tsv"
    est.record_calibration(short, _measured(1.2, steps=20))
    result = est.estimate(cfg(), 10, calibration_path=short)
    assert result.seconds_per_step == pytest.approx(1.45)
    assert f"only 20 steps timed (it takes {est.MIN_MEASURED_STEPS})" in result.speed_source
    other = tmp_path / "other.tsv"
    est.record_calibration(other, _measured(1.2, settings=est.speed_settings(cfg(network_dim=128))))
    result = est.estimate(cfg(), 10, calibration_path=other)
    assert result.seconds_per_step == pytest.approx(1.45) and "measured with other settings" in result.speed_source
    assert est.estimate(cfg(network_dim=128), 10, calibration_path=other).seconds_per_step == pytest.approx(1.2)


def test_a_calibration_file_without_the_new_columns_is_still_read(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.tsv"
    columns = est.CALIBRATION_FIELDS[:8]
    calibration.write_text("\t".join(columns) + "\nRTX 4090\t0\t1024\t1\tyes\t1.3\tmeasured: run old\t\n")
    (row,) = est.load_calibration(calibration)
    assert row.steps is None and row.settings == ""
    assert est.estimate(cfg(), 10, calibration_path=calibration).seconds_per_step == pytest.approx(1.3)


def test_budget_guard_message_and_hints_that_really_fit() -> None:
    settings = cfg(num_repeats=10, batch_size=1, max_train_epochs=10, max_gpu_hours=1.0)
    result = est.estimate(settings, 40)
    assert result.exceeds_budget
    message = result.budget_message()
    assert message is not None and "\n" not in message
    over = result.total_hours - 1.0
    assert f"by {over:.2f} h" in message and "train.max_gpu_hours 1" in message
    epochs_hint = next(h for h in result.under_budget_hints if h.startswith("train.max_train_epochs"))
    fitting = int(epochs_hint.split()[1])
    assert est.estimate({**settings, "max_train_epochs": fitting}, 40).total_hours <= 1.0
    assert est.estimate({**settings, "max_train_epochs": fitting + 1}, 40).total_hours > 1.0
    assert any("train.num_repeats" in h for h in result.under_budget_hints)
    assert any("training images" in h for h in result.under_budget_hints)
    assert any("WARNING" in line and "max_gpu_hours" in line for line in result.format_lines())


def test_no_budget_means_no_limit() -> None:
    result = est.estimate(cfg(max_gpu_hours=0.0, max_train_epochs=100), 400)
    assert not result.exceeds_budget and result.budget_message() is None


def test_memory_warning_when_settings_do_not_fit_the_card() -> None:
    heavy = est.estimate(cfg(gradient_checkpointing=False, batch_size=4), 10)
    assert any("GB" in w for w in heavy.warnings)
    light = est.estimate(cfg(), 10)
    assert light.warnings == []


def test_image_sizes_from_headers(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((300, 500, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((64, 32, 3), np.uint8))
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    # sd-scripts (PIL) sees the stored size: the header of a WebP is read too (likeness.imageheader).
    cv2.imwrite(str(tmp_path / "d.webp"), np.zeros((40, 70, 3), np.uint8))
    assert images.image_size(tmp_path / "a.jpg") == (500, 300)
    assert images.image_size(tmp_path / "b.png") == (32, 64)
    assert images.image_size(tmp_path / "c.jpg") is None
    assert images.image_size(tmp_path / "d.webp") == (70, 40)


def test_before_the_selection_runs_the_dry_run_labels_its_figures_an_upper_bound(tmp_path: Path) -> None:
    shown = runplan.dry_run(validate_section("train", cfg()), tmp_path / "missing", max_images=40, runs_root=tmp_path)
    assert shown.lines[0].startswith("training estimate, upper bound (")
    assert "keeps at most 40 images" in shown.lines[-1] and "upper bound" in shown.lines[-1]
    assert shown.runtime_minutes > 0
    # The job's own runtime in the message: Snakemake evaluates it again right before the job is scheduled.
    assert shown.message.endswith("resources: gpu=1, runtime={resources.runtime} min")


def test_the_upper_bound_is_the_longest_training_any_smaller_selection_can_make() -> None:
    """With the auto budget 6 images train more steps than 14 (1,980 against 1,960): the bound covers both."""
    auto = cfg(num_repeats="auto", max_train_epochs="auto")
    bound = est.upper_bound_estimate(auto, 14)
    every = [est.estimate(auto, n).total_steps for n in range(1, 15)]
    assert bound.total_steps == max(every) > est.estimate(auto, 14).total_steps
    # Fixed repeats and epochs: more images, more steps; the bound is the largest selection's.
    fixed = cfg(num_repeats=3, max_train_epochs=4, batch_size=2, gradient_accumulation_steps=2)
    assert est.upper_bound_estimate(fixed, 14).total_steps == est.estimate(fixed, 14).total_steps


def test_sample_overhead_follows_each_prompts_own_step_count() -> None:
    """A prompt that asks for more sampling steps (--s) costs more sampling time in the estimate."""
    default = est.estimate(cfg(sample_every_n_epochs=1, sample_prompts=["{trigger} a", "{trigger} b"]), 40)
    slower = est.estimate(cfg(sample_every_n_epochs=1, sample_prompts=["{trigger} a", "{trigger} b --s 56"]), 40)
    # Generated lines get --s 28: the second line doubling its steps adds half again to the sampling time.
    assert slower.overhead_seconds["samples"] == pytest.approx(default.overhead_seconds["samples"] * 1.5)


def test_headshots_of_every_saved_epoch_are_priced_and_count_against_the_budget() -> None:
    base = cfg(num_repeats=10, batch_size=1, max_train_epochs=10, headshot_steps=30, max_gpu_hours=2.0)
    result = est.estimate(base, 40)
    # 10 saved LoRAs (9 per-epoch + the final one) x (model load + 6 prompts x 30 steps x 0.35 x 1.45 s)
    expected = 10 * (overheads.MODEL_LOAD_SECONDS + 6 * 30 * overheads.SAMPLING_STEP_FRACTION * 1.45)
    assert result.overhead_seconds["headshots"] == pytest.approx(expected)
    assert any("headshots" in line for line in result.format_lines())
    without = est.estimate({**base, "headshot_prompts": []}, 40)
    assert "headshots" not in without.overhead_seconds
    assert result.total_seconds == pytest.approx(without.total_seconds + expected)
    # The headshots alone push this run over its budget: the guard says so.
    assert without.budget_message() is None and result.budget_message() is not None
    # Smaller headshots cost the pixel ratio.
    half = est.estimate({**base, "headshot_size": 512}, 40)
    assert half.overhead_seconds["headshots"] == pytest.approx(10 * (60 + 6 * 30 * 0.35 * 1.45 / 4))
