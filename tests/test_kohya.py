"""Generated sd-scripts configs (likeness.sdscripts): every key and TOML type checked against the option list kept
in the repo; TOML writing through tomli-w."""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import pytest
from fixtures.training import CLASS_WORD, TRIGGER, double_config, make_images
from likeness.config import validate_section
from likeness.errors import ConfigError
from likeness.sdscripts import configs, options, prompts
from likeness.sdscripts.tomlfile import dumps_toml
from likeness.train import step_budget
from likeness.train.runplan import RunPlan, prepare_run

TSV = Path(__file__).resolve().parents[1] / "resources" / "kohya" / "sdxl_train_network_v0.10.1_options.tsv"

# The test's own reading of the type column, independent of likeness.sdscripts.options' checker.
PYTHON_TYPES = {
    "bool": lambda v: type(v) is bool,
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) is float,
    "str": lambda v: type(v) is str,
    "path": lambda v: type(v) is str,
    "int_or_float": lambda v: type(v) in (int, float),
    "number": lambda v: type(v) in (int, float),
    "int_or_pair": lambda v: type(v) is int or (type(v) is list and [type(x) for x in v] == [int, int]),
    "list[str]": lambda v: type(v) is list and all(type(x) is str for x in v),
    "list[float]": lambda v: type(v) is list and all(type(x) is float for x in v),
    "float_pair": lambda v: type(v) is list and [type(x) for x in v] == [float, float],
    "array_of_tables": lambda v: type(v) is list and all(type(x) is dict for x in v),
}


def tsv_types() -> dict[str, dict[str, str]]:
    lines = [line for line in TSV.read_text().splitlines() if line and not line.startswith("#")]
    table: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        table.setdefault(row["scope"], {})[row["name"]] = row["type"]
    return table


def assert_keys_and_types(scope: str, mapping: dict, types: dict[str, dict[str, str]]) -> None:
    for key, value in mapping.items():
        assert key in types[scope], f"{key} is not a {scope} option of sd-scripts v0.10.1"
        expected = types[scope][key]
        assert PYTHON_TYPES[expected](value), f"{scope}.{key} = {value!r} is not {expected}"


@pytest.fixture()
def run_plan(tmp_path: Path) -> RunPlan:
    make_images(tmp_path / "dataset", 3)
    make_images(tmp_path / "reg", 2, captions=False, seed=5)
    cfg = validate_section(
        "train", double_config(tmp_path, reg_images=str(tmp_path / "reg"), extra={"noise_offset": 0.05})
    )
    dataset = tmp_path / "dataset"
    return prepare_run(cfg, dataset, dataset, trigger=TRIGGER, class_word=CLASS_WORD, runs_root=tmp_path / "runs")


def test_option_list_holds_the_release_parser_and_dataset_schema() -> None:
    types = tsv_types()
    assert types["train"]["learning_rate"] == "float"
    assert types["train"]["network_dim"] == "int"
    assert types["train"]["sdpa"] == "bool"
    assert types["train"]["optimizer_args"] == "list[str]"
    assert "text_encoder_lr1" not in types["train"]  # a trap named in the reference: it does not exist
    assert types["dataset.subsets"]["is_reg"] == "bool"
    assert "is_reg" not in types["dataset.general"]
    assert "prior_loss_weight" not in types["dataset.general"]  # a training argument, rejected in datasets
    assert types["dataset.general"]["validation_split"] == "float"
    assert len(types["train"]) > 150


def test_generated_train_toml_uses_real_option_names_and_types(run_plan: RunPlan) -> None:
    types = tsv_types()
    with open(run_plan.train_toml, "rb") as handle:
        doc = tomllib.load(handle)
    flat: dict = {}
    for table in doc.values():
        assert isinstance(table, dict), "train.toml keeps every option in a table"
        flat.update(table)
    assert_keys_and_types("train", flat, types)
    # the 24 GB defaults the issue asks for
    assert flat["mixed_precision"] == "no"  # what the test config asks for
    assert flat["sdpa"] is True and flat["gradient_checkpointing"] is True
    assert flat["cache_latents"] is True and flat["cache_text_encoder_outputs"] is True
    assert flat["network_train_unet_only"] is True
    assert flat["save_state"] is True and flat["save_every_n_epochs"] == 1
    assert flat["noise_offset"] == 0.05
    assert flat["sample_prompts"] == "sample_prompts.txt"  # relative to the run folder, where sd-scripts runs
    assert flat["logging_dir"] == "output/logs"  # TensorBoard event files, inside output/ (travels home with it)


def test_generated_dataset_toml_levels_and_types(run_plan: RunPlan) -> None:
    types = tsv_types()
    with open(run_plan.dataset_toml, "rb") as handle:
        doc = tomllib.load(handle)
    assert set(doc) == {"general", "datasets"}
    assert_keys_and_types("dataset.general", doc["general"], types)
    for dataset in doc["datasets"]:
        assert_keys_and_types("dataset.datasets", dataset, types)
        for subset in dataset["subsets"]:
            assert_keys_and_types("dataset.subsets", subset, types)
    train_subset, reg_subset = doc["datasets"][0]["subsets"]
    assert doc["general"]["keep_tokens"] == 1 and doc["general"]["caption_extension"] == ".txt"
    assert "is_reg" not in train_subset
    assert reg_subset["is_reg"] is True and reg_subset["class_tokens"] == CLASS_WORD
    # folders named relative to the run folder (sd-scripts' working directory), and there
    run_dir = Path(run_plan.run_dir)
    assert (train_subset["image_dir"], reg_subset["image_dir"]) == ("dataset", "reg")
    assert (run_dir / train_subset["image_dir"]).is_dir() and (run_dir / reg_subset["image_dir"]).is_dir()


def test_sample_prompts_all_carry_the_trigger(tmp_path: Path) -> None:
    text = prompts.sample_prompts_text(
        ["{trigger} {class_word}, headshot", "portrait photo --w 512 --h 512"],
        trigger=TRIGGER,
        class_word=CLASS_WORD,
        resolution=1024,
    )
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{TRIGGER} {CLASS_WORD}, headshot --w 1024 --h 1024")
    assert lines[1] == f"{TRIGGER}, portrait photo --w 512 --h 512"
    defaults = prompts.sample_prompts_text(
        validate_section("train", {}).sample_prompts, trigger=TRIGGER, class_word=CLASS_WORD, resolution=1024
    )
    assert len(defaults.splitlines()) == 3 and all(TRIGGER in line for line in defaults.splitlines())


def test_toml_writer_keeps_floats_floats() -> None:
    text = dumps_toml({"t": {"a": 1.0, "b": 1e-05, "c": 3, "d": [0.5, 2.0], "e": 'say "hi"', "f": False}})
    assert tomllib.loads(text) == {"t": {"a": 1.0, "b": 1e-05, "c": 3, "d": [0.5, 2.0], "e": 'say "hi"', "f": False}}
    assert type(tomllib.loads(text)["t"]["a"]) is float


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"text_encoder_lr1": 1e-5}, "train.extra.text_encoder_lr1"),
        ({"max_grad_norm": "1.0"}, "train.extra.max_grad_norm"),
        ({"save_last_n_epochs": 2}, "train.extra.save_last_n_epochs"),
        ({"lr_scheduler_type": 3}, "train.extra.lr_scheduler_type"),
    ],
)
def test_extra_options_are_checked_against_the_release(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        options.validate_extra(extra)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_extra_converts_whole_numbers_for_float_options() -> None:
    checked = options.validate_extra({"max_grad_norm": 1, "min_snr_gamma": 5, "xformers": True})
    assert checked == {"max_grad_norm": 1.0, "min_snr_gamma": 5.0, "xformers": True}
    assert type(checked["max_grad_norm"]) is float


def test_checker_finds_unknown_keys_and_wrong_types() -> None:
    problems = options.check_dataset_config(
        {"general": {"resolution": "1024", "prior_loss_weight": 1.0}, "datasets": [{"subsets": [{}]}]}
    )
    assert any("resolution" in p for p in problems)
    assert any("prior_loss_weight" in p for p in problems)
    assert any("image_dir" in p for p in problems)
    assert options.check_train_options({"training": {"learning_rate": "1e-4"}})
    assert options.check_train_options({"training": {"learning_rate": 1e-4}}) == []


def test_cached_text_encoder_outputs_need_unet_only(tmp_path: Path) -> None:
    cfg = validate_section("train", double_config(tmp_path, extra={"network_train_unet_only": False}))
    with pytest.raises(ConfigError):
        configs.build_train_options(cfg, output_dir="/o", sample_prompts_path=None, logging_dir=None)


def test_unknown_train_key_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        validate_section("train", double_config(tmp_path, learning_rte=1e-4))
    assert "train.learning_rte" in str(error.value)


def test_defaults_fit_a_24gb_card() -> None:
    # "auto" repeats and epochs are resolved for the dataset before any config is written
    cfg = step_budget.resolve(validate_section("train", {}), 20)
    written = configs.build_train_options(cfg, output_dir="/o", sample_prompts_path="/p.txt", logging_dir="/l")
    flat = {key: value for table in written.values() for key, value in table.items()}
    assert flat["mixed_precision"] == "bf16" and flat["sdpa"] is True
    assert flat["gradient_checkpointing"] is True and flat["cache_latents"] is True
    assert flat["cache_text_encoder_outputs"] is True and flat["network_train_unet_only"] is True
    assert flat["optimizer_type"] in ("AdamW8bit", "Adafactor")
    assert 8 <= flat["network_dim"] <= 64 and type(flat["learning_rate"]) is float
    assert flat["max_train_epochs"] == 10 and "max_train_steps" not in flat
    assert options.check_train_options(written) == []


def test_toml_escapes_what_toml_forbids_raw() -> None:
    # U+007F (DEL) and other control characters must be escaped in a TOML basic string; the hand-written
    # writer (json.dumps) left DEL raw, which tomllib refuses to read.
    value = "a\x7fb\x1bc\td"
    text = dumps_toml({"t": {"caption_prefix": value}})
    assert "\\u007f" in text
    assert tomllib.loads(text)["t"]["caption_prefix"] == value


def test_toml_layout_is_the_documented_one() -> None:
    # one shape whatever the length of a path: [[datasets.subsets]] tables, never inline tables
    doc = {"general": {"resolution": 1024}, "datasets": [{"subsets": [{"image_dir": "d", "num_repeats": 2}]}]}
    assert dumps_toml(doc) == (
        '[general]\nresolution = 1024\n\n[[datasets]]\n\n[[datasets.subsets]]\nimage_dir = "d"\nnum_repeats = 2\n'
    )
    # tomli-w writes arrays one item a line (the hand-written writer wrote them on one line)
    assert dumps_toml({"t": {"network_args": ["a=1", "b=2"]}}) == '[t]\nnetwork_args = [\n    "a=1",\n    "b=2",\n]\n'
    with pytest.raises(ValueError):
        dumps_toml({"t": {"x": float("nan")}})
