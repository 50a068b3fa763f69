"""sd-scripts v0.10.1's option tables, and the checks of what the workflow writes against them.

sd-scripts flattens train.toml into argparse defaults without converting types and keeps unknown keys
silently, so a typo or a ``"1e-4"`` string would do nothing at all. Everything written is therefore
checked against ``resources/kohya/sdxl_train_network_v0.10.1_options.tsv``: the option names and types
taken from that release's argument parser and its dataset-config schema (voluptuous, in config_util.py).
``sdxl_gen_img_v0.10.1_options.txt`` lists the generation script's options (the headshots use it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from likeness import RESOURCES, tables
from likeness.errors import ConfigError
from likeness.sdscripts import RELEASE

KOHYA_RESOURCES = RESOURCES / "kohya"
OPTIONS_TSV = KOHYA_RESOURCES / f"sdxl_train_network_{RELEASE}_options.tsv"
GEN_OPTIONS_TXT = KOHYA_RESOURCES / f"sdxl_gen_img_{RELEASE}_options.txt"

TRAIN_SCOPE = "train"
DATASET_SCOPES = ("dataset.general", "dataset.datasets", "dataset.subsets")

# Options the workflow owns: overriding them through train.extra would break resuming, the run folder
# layout or the promise never to delete anything trained.
RESERVED_EXTRA = {
    "output_dir": "the workflow chooses the run folder",
    "output_name": "use train.output_name",
    "resume": "the workflow resumes from the newest complete state by itself",
    "initial_epoch": "the workflow sets it when it resumes",
    "initial_step": "the workflow resumes by epoch",
    "save_state": "states are always saved so that an interrupted training can resume",
    "save_last_n_epochs": "sd-scripts would delete earlier epochs; nothing trained is ever deleted",
    "save_last_n_epochs_state": "sd-scripts would delete earlier states; the workflow never deletes them",
    "save_last_n_steps": "sd-scripts would delete earlier checkpoints",
    "save_last_n_steps_state": "sd-scripts would delete earlier states",
    "config_file": "the workflow passes train.toml itself",
    "dataset_config": "the workflow passes dataset.toml itself",
    "sample_prompts": "use train.sample_prompts",
    "max_train_steps": "use train.max_train_epochs (resuming works by epoch)",
    "train_batch_size": "use train.batch_size",
    "pretrained_model_name_or_path": "use train.base_model",
}


@dataclass(frozen=True)
class OptionSpec:
    scope: str
    name: str
    type: str
    default: str
    choices: tuple[str, ...]


@cache
def load_option_specs(path: str | None = None) -> dict[str, dict[str, OptionSpec]]:
    """Read the options TSV into ``{scope: {name: OptionSpec}}`` (lines starting with ``#`` are notes)."""
    specs: dict[str, dict[str, OptionSpec]] = {}
    for row in tables.read_resource_table(Path(path) if path else OPTIONS_TSV):
        choices = tuple(c for c in row["choices"].split(",") if c)
        spec = OptionSpec(row["scope"], row["name"], row["type"], row["default"], choices)
        specs.setdefault(spec.scope, {})[spec.name] = spec
    return specs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def value_matches_type(value: Any, type_name: str) -> bool:
    """Whether a TOML value has the type sd-scripts expects (TOML ints are not floats, as in voluptuous)."""
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": _is_int,
        "float": _is_float,
        "str": lambda v: isinstance(v, str),
        "path": lambda v: isinstance(v, str),
        "int_or_float": lambda v: _is_int(v) or _is_float(v),
        "number": lambda v: _is_int(v) or _is_float(v),
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "list[float]": lambda v: isinstance(v, list) and all(_is_float(x) for x in v),
        "float_pair": lambda v: isinstance(v, list) and len(v) == 2 and all(_is_float(x) for x in v),
        "int_or_pair": lambda v: _is_int(v) or (isinstance(v, list) and len(v) == 2 and all(map(_is_int, v))),
        "table": lambda v: isinstance(v, dict),
        "array_of_tables": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
    }
    check = checks.get(type_name)
    return bool(check and check(value))


def _check_value(scope: str, name: str, value: Any, where: str) -> list[str]:
    spec = load_option_specs().get(scope, {}).get(name)
    if spec is None:
        return [f"{where}: '{name}' is not an option of sdxl_train_network.py {RELEASE} ({scope})"]
    problems = []
    if not value_matches_type(value, spec.type):
        problems.append(f"{where}: '{name}' must be {spec.type}, not {type(value).__name__} {value!r}")
    elif spec.choices and isinstance(value, str) and value not in spec.choices:
        problems.append(f"{where}: '{name}' must be one of {', '.join(spec.choices)}, not {value!r}")
    return problems


def check_train_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with a train.toml document (tables are flattened, as sd-scripts does)."""
    problems: list[str] = []
    for key, value in options.items():
        if isinstance(value, dict):
            for name, inner in value.items():
                problems += _check_value(TRAIN_SCOPE, name, inner, f"[{key}]")
        else:
            problems += _check_value(TRAIN_SCOPE, key, value, "train.toml")
    return problems


def check_dataset_config(doc: Mapping[str, Any]) -> list[str]:
    """Problems with a dataset.toml document, key by key and level by level."""
    problems: list[str] = []
    for key in doc:
        if key not in ("general", "datasets"):
            problems.append(f"dataset.toml: top-level key '{key}' is not allowed (only general and datasets)")
    for name, value in dict(doc.get("general", {})).items():
        problems += _check_value("dataset.general", name, value, "[general]")
    for i, dataset in enumerate(doc.get("datasets", [])):
        for name, value in dataset.items():
            if name != "subsets":
                problems += _check_value("dataset.datasets", name, value, f"[[datasets]] #{i + 1}")
        for j, subset in enumerate(dataset.get("subsets", [])):
            if "image_dir" not in subset:
                problems.append(f"[[datasets.subsets]] #{j + 1}: 'image_dir' is required")
            for name, value in subset.items():
                problems += _check_value("dataset.subsets", name, value, f"[[datasets.subsets]] #{j + 1}")
    return problems


def validate_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``train.extra``: real option names of the release, right TOML types, not workflow-owned."""
    checked: dict[str, Any] = {}
    for key, value in dict(extra or {}).items():
        where = f"train.extra.{key}"
        if isinstance(value, tuple):  # frozen settings hold arrays as tuples; TOML and the checks want lists
            value = list(value)
        if key in RESERVED_EXTRA:
            raise ConfigError(where, f"cannot be set here: {RESERVED_EXTRA[key]}")
        spec = load_option_specs()[TRAIN_SCOPE].get(key)
        if spec is None:
            raise ConfigError(where, f"not an option of sdxl_train_network.py {RELEASE}")
        if spec.type in ("float", "list[float]") and _is_int(value):
            value = float(value)  # YAML writes 1 for 1.0; sd-scripts would keep an int where it wants a float
        if spec.type == "list[float]" and isinstance(value, list):
            value = [float(v) if _is_int(v) else v for v in value]
        if not value_matches_type(value, spec.type):
            raise ConfigError(where, f"must be {spec.type}, not {type(value).__name__} {value!r}")
        if spec.choices and isinstance(value, str) and value not in spec.choices:
            raise ConfigError(where, f"must be one of {', '.join(spec.choices)}")
        checked[key] = value
    return checked


@cache
def gen_options(path: str | None = None) -> frozenset[str]:
    """The ``--option`` names of sdxl_gen_img.py (one a line in the options file)."""
    text = Path(path or GEN_OPTIONS_TXT).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.startswith("--"))
