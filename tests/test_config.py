"""likeness.config: the schema fills defaults once, builds frozen settings, reads command-line strings."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from fixtures.runs import copy_workflow, snakemake
from likeness.config import Section, check_yaml_syntax, load_schema, section_settings, validate_config
from likeness.errors import ConfigError, LikenessError

REPO_ROOT = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {"person": "Grace Hopper", "source": {"url": "sqlite:///index.db"}}


def test_defaults_come_from_the_schema_once():
    config = minimal()
    settings = validate_config(config)
    schema = load_schema()
    assert settings.trigger == schema["properties"]["trigger"]["default"]
    assert settings.select.top_n == schema["properties"]["select"]["properties"]["top_n"]["default"]
    assert settings.train.seed == schema["properties"]["train"]["properties"]["seed"]["default"]
    # The config dict holds the same defaults (rules pass its sections as params).
    assert config["train"]["seed"] == settings.train.seed
    assert settings.train.as_dict() == config["train"]


def test_every_schema_key_is_an_attribute_of_its_section():
    settings = validate_config(minimal())
    schema = load_schema()
    for section, section_schema in schema["properties"].items():
        if section_schema.get("type") != "object" or not section_schema.get("properties"):
            continue
        value = getattr(settings, section)
        assert isinstance(value, Section)
        keys = {field.metadata["key"] for field in dataclasses.fields(value)}
        assert keys == set(section_schema["properties"]), section
    assert settings.source.import_ == ""  # a Python keyword gets a trailing underscore


def test_settings_are_frozen_all_the_way_down():
    settings = validate_config({**minimal(), "caption": {"exclude_tags": ["hat"], "replace_tags": {"a": "b"}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.select.top_n = 5
    assert settings.caption.exclude_tags == ("hat",)
    with pytest.raises(TypeError):
        settings.caption.replace_tags["a"] = "c"  # type: ignore[index]
    assert settings.caption.as_dict()["exclude_tags"] == ["hat"]


def test_a_job_rebuilds_the_same_settings_from_its_params():
    config = minimal()
    settings = validate_config(config)
    assert section_settings("train", config["train"]) == settings.train
    assert section_settings("select", config["select"]) == settings.select


def test_command_line_strings_become_the_type_the_schema_wants():
    # What `snakemake --config select='{top_n: 5, diversity: false}' train='{num_repeats: 3}'` hands over:
    # Snakemake reads the values with YAML's BaseLoader, so every scalar arrives as a string.
    config = {
        **minimal(),
        "select": {"top_n": "5", "diversity": "false", "max_identity_distance": "null", "taken_after": "2020-01-01"},
        "train": {"gpu_hourly_cost": "0.2", "num_repeats": "3", "max_train_epochs": "auto", "hub_cache": "null"},
        "crop": {"factor": "1.5"},
        "caption": {"exclude_tags": ["hat", "1girl"], "class_word": "123"},
    }
    settings = validate_config(config, command_line=copy.deepcopy(config))
    assert settings.select.top_n == 5
    assert settings.select.diversity is False
    assert settings.select.max_identity_distance is None
    assert settings.select.taken_after == "2020-01-01"  # a string is what the schema wants here
    assert settings.train.gpu_hourly_cost == 0.2
    assert settings.train.num_repeats == 3
    assert settings.train.max_train_epochs == "auto"
    assert settings.train.hub_cache == "null"  # ambiguous: the schema accepts the string as well as null
    assert settings.caption.exclude_tags == ("hat", "1girl")  # strings stay strings in a list of strings
    assert settings.caption.class_word == "123"
    assert settings.crop.factor == 1.5


def test_a_string_no_reading_fits_is_one_line_naming_the_key():
    given = {"train": {"max_gpu_hours": "lots"}}
    with pytest.raises(ConfigError) as error:
        validate_config({**minimal(), **given}, command_line=given)
    assert str(error.value) == "config key 'train.max_gpu_hours': 'lots' is not of type number"
    given = {"select": {"top_n": "1.5"}}
    with pytest.raises(ConfigError, match=r"'select\.top_n'"):
        validate_config({**minimal(), **given}, command_line=given)


def test_strings_from_a_config_file_are_not_reread():
    """Only --config values arrive as strings by necessity; a quoted "5" in config.yaml is a mistake to name."""
    with pytest.raises(ConfigError, match=r"'select\.top_n': '5' is not of type integer"):
        validate_config({**minimal(), "select": {"top_n": "5"}})
    with pytest.raises(ConfigError, match=r"'select\.manual_only'"):
        validate_config({**minimal(), "select": {"manual_only": "yes"}}, command_line={"train": {}})


@pytest.mark.snakemake
def test_snakemake_config_values_reach_the_settings(tmp_path):
    """Through Snakemake's own --config parser: the values arrive as strings and are read as the schema says."""
    probe = tmp_path / "Snakefile"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(minimal()))
    probe.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(REPO_ROOT / "workflow")!r})
            from likeness.config import validate_config
            configfile: "config.yaml"
            s = validate_config(config, workflow.config_settings.overwrite_config)
            print("PROBE", repr(s.select.top_n), repr(s.train.gpu_hourly_cost), repr(s.select.diversity))
            rule all:
                output: "x"
                shell: "touch {{output}}"
            """
        )
    )
    result = snakemake(
        tmp_path, "-n", "--config", "select={top_n: 5, diversity: false}", "train={gpu_hourly_cost: 0.2}"
    )
    assert "PROBE 5 0.2 False" in result.stdout


def test_an_out_of_range_command_line_value_is_named_as_a_range_error():
    """`--config select='{top_n: 0}'` says what config.yaml's top_n: 0 says, not that '0' is a string."""
    given = {"select": {"top_n": "0"}}
    with pytest.raises(ConfigError) as from_command_line:
        validate_config({**minimal(), **copy.deepcopy(given)}, command_line=given)
    with pytest.raises(ConfigError) as from_file:
        validate_config({**minimal(), "select": {"top_n": 0}})
    assert str(from_command_line.value) == str(from_file.value)
    assert str(from_command_line.value) == "config key 'select.top_n': 0 is less than the minimum of 1"


def test_a_yaml_slip_is_named_by_file_and_line(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("person: Grace Hopper\nselect:\n  top_n: 5\n   diversity: false\n")
    with contextlib.chdir(tmp_path), pytest.raises(LikenessError, match=r"^config\.yaml line 4, column \d+: ") as error:
        check_yaml_syntax("config.yaml")
    assert "\n" not in str(error.value)


@pytest.mark.snakemake
def test_the_workflow_answers_a_yaml_slip_and_an_out_of_range_value_in_one_last_line(tmp_path):
    """Through the real Snakefile: config.yaml's line, and --config's range error, end the output."""
    workdir = copy_workflow(tmp_path / "wf")
    config = {**minimal(), "select": {"top_n": 5}}
    text = yaml.safe_dump(config, sort_keys=False)
    (workdir / "config.yaml").write_text(text.replace("  top_n: 5", "   top_n: 5\n  diversity: false"))
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert re.fullmatch(r"likeness: config\.yaml line \d+, column \d+: .+", last), last

    (workdir / "config.yaml").write_text(text)
    result = snakemake(workdir, "-n", "--config", "select={top_n: 0}", check=False)
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert last == "likeness: config key 'select.top_n': 0 is less than the minimum of 1", last
