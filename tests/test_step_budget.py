"""The auto step budget: repeats and epochs that follow the dataset size, checked against the estimate."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from fixtures.training import CLASS_WORD, TRIGGER, double_config, make_images
from likeness.config import validate_section
from likeness.errors import ConfigError
from likeness.train import estimate as est
from likeness.train import runplan, step_budget


@pytest.mark.parametrize(
    ("images", "repeats", "epochs"),
    [
        (1, 50, 10),  # repeats clipped at MAX_REPEATS
        (3, 50, 10),
        (14, 14, 10),  # the demo: 1,960 views
        (20, 10, 10),
        (40, 5, 10),
        (100, 2, 10),
        (130, 2, 8),  # 260 views an epoch: fewer epochs keep the total near 2,000
        (250, 1, 8),
        (1000, 1, 4),  # never below MIN_EPOCHS
    ],
)
def test_auto_rule(images: int, repeats: int, epochs: int) -> None:
    budget = step_budget.step_budget("auto", "auto", images)
    assert (budget.num_repeats, budget.max_train_epochs) == (repeats, epochs)
    assert budget.auto_keys == ("num_repeats", "max_train_epochs")


@pytest.mark.parametrize("images", [10, 14, 20, 25, 40, 60, 100, 150, 200])
def test_auto_budget_lands_in_the_common_range(images: int) -> None:
    budget = step_budget.step_budget("auto", "auto", images)  # the schema's default
    views = images * budget.num_repeats * budget.max_train_epochs
    assert 1500 <= views <= 3000, (images, budget)


def test_explicit_values_win() -> None:
    budget = step_budget.step_budget(3, "auto", 100)
    assert budget.num_repeats == 3 and budget.auto_keys == ("max_train_epochs",)
    assert budget.max_train_epochs == 7  # round(2000 / 300)
    both = step_budget.resolve(validate_section("train", {"num_repeats": 7, "max_train_epochs": 12, "seed": 3}), 100)
    assert (both.num_repeats, both.max_train_epochs, both.seed) == (7, 12, 3)
    assert step_budget.step_budget(7, 12, 100).note(100) is None


def test_schema_defaults_are_auto_and_reject_other_strings() -> None:
    cfg = validate_section("train", {})
    assert cfg.num_repeats == "auto" and cfg.max_train_epochs == "auto"
    assert validate_section("train", {"num_repeats": 4}).num_repeats == 4
    with pytest.raises(ConfigError, match=r"train\.num_repeats"):
        validate_section("train", {"num_repeats": "lots"})
    with pytest.raises(ConfigError, match=r"train\.max_train_epochs"):
        validate_section("train", {"max_train_epochs": 0})


@pytest.mark.parametrize("images", [20, 100])
def test_20_and_100_faces_fit_well_inside_the_default_budget_on_a_4090(images: int) -> None:
    cfg = validate_section("train", {}).as_dict()  # every default: gpu auto, 1024 px, batch 1, max_gpu_hours 4
    assert cfg["gpu"] == "auto" and cfg["max_gpu_hours"] == 4.0
    estimate = est.estimate(cfg, images, detected=[])  # no GPU visible: priced as the RTX 4090 auto assumes
    assert estimate.gpu == "RTX 4090"
    assert 1500 <= estimate.total_steps <= 3000
    assert estimate.total_hours <= cfg["max_gpu_hours"] / 2, estimate.format_lines()
    assert not estimate.exceeds_budget
    assert any("auto step budget for" in line for line in estimate.format_lines())


def test_fixed_old_defaults_would_not_fit_100_faces() -> None:
    # what the auto rule replaces: 10 repeats x 10 epochs grows with the set and breaks the budget
    estimate = est.estimate({**validate_section("train", {}).as_dict(), "num_repeats": 10, "max_train_epochs": 10}, 100)
    assert estimate.total_steps == 10000 and estimate.exceeds_budget


def test_prepared_run_writes_the_resolved_numbers(tmp_path: Path) -> None:
    make_images(tmp_path / "dataset", 5)
    cfg = double_config(tmp_path, num_repeats="auto", max_train_epochs="auto")
    dataset = tmp_path / "dataset"
    plan = runplan.prepare_run(
        validate_section("train", cfg),
        dataset,
        dataset,
        trigger=TRIGGER,
        class_word=CLASS_WORD,
        runs_root=tmp_path / "runs",
    )
    dataset_doc = tomllib.loads(Path(plan.dataset_toml).read_text())
    train = tomllib.loads(Path(plan.train_toml).read_text())
    assert dataset_doc["datasets"][0]["subsets"][0]["num_repeats"] == 40  # round(200 / 5)
    assert train["training"]["max_train_epochs"] == 10
    assert plan.train_cfg["num_repeats"] == 40 and plan.train_cfg["max_train_epochs"] == 10
    # the run's estimate (recomputed at launch from the plan) counts the same steps
    estimate = runplan.plan_estimate(plan, validate_section("train", {**plan.train_cfg, "gpu": "CPU"}), None)
    assert estimate.total_steps == 5 * 40 * 10


def test_over_budget_hints_under_auto_say_which_repeats_they_assume() -> None:
    cfg = {**validate_section("train", {}).as_dict(), "max_gpu_hours": 0.9}  # the headshots alone take 0.42 h
    message = est.estimate(cfg, 100).budget_message()
    assert message and "train.max_train_epochs" in message
    # fewer images alone would not help under "auto" (repeats would rise): the hint pins today's repeats
    assert "training images (now 100) with train.num_repeats 2" in message
    explicit = est.estimate({**cfg, "num_repeats": 2, "max_train_epochs": 10}, 100).budget_message()
    assert explicit and "training images (now 100)" in explicit and "with train.num_repeats" not in explicit
