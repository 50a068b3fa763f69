"""Configs for kohya sd-scripts' ``sdxl_train_network.py`` (v0.10.1): dataset.toml, train.toml, prompts.

sd-scripts flattens train.toml into argparse defaults without converting types and keeps unknown keys
silently, so a typo or a ``"1e-4"`` string would do nothing at all. Everything written here is therefore
checked against ``resources/kohya/sdxl_train_network_v0.10.1_options.tsv``: the option names and types
taken from that release's argument parser and its dataset-config schema.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.errors import ConfigError

SD_SCRIPTS_RELEASE = "v0.10.1"
REPO_ROOT = Path(__file__).resolve().parents[3]
OPTIONS_TSV = REPO_ROOT / "resources" / "kohya" / f"sdxl_train_network_{SD_SCRIPTS_RELEASE}_options.tsv"

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

DEFAULT_NEGATIVE_PROMPT = "lowres, blurry, bad anatomy, deformed face, watermark, text"


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
        return [f"{where}: '{name}' is not an option of sdxl_train_network.py {SD_SCRIPTS_RELEASE} ({scope})"]
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


# --- TOML writing ------------------------------------------------------------------------------------------
# A tiny writer for the few shapes these configs use (the venv has no TOML writer). Floats keep a decimal
# point or exponent so that TOML reads them back as floats: 1.0 stays 1.0, never 1.


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_int(value):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write non-finite float {value!r} to TOML")
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{key} = {_toml_value(value)}" for key, value in table.items() if not isinstance(value, dict)]


def dumps_toml(doc: Mapping[str, Any]) -> str:
    """TOML text for ``{key: scalar | list | table | list of tables (one level of nesting)}``."""
    lines = _toml_pairs({k: v for k, v in doc.items() if not _is_table_array(v)})
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *_toml_pairs(value)]
    for key, value in doc.items():
        if _is_table_array(value):
            for item in value:
                scalars = {k: v for k, v in item.items() if not _is_table_array(v)}
                lines += ["", f"[[{key}]]", *_toml_pairs(scalars)]
                for sub_key, sub_value in item.items():
                    if _is_table_array(sub_value):
                        for sub_item in sub_value:
                            lines += ["", f"[[{key}.{sub_key}]]", *_toml_pairs(sub_item)]
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


# --- building the configs ---------------------------------------------------------------------------------


def bucket_limits(resolution: int, steps: int = 64) -> tuple[int, int]:
    """min/max bucket sizes sd-scripts accepts for ``resolution``: multiples of ``steps`` around it."""
    min_reso = max(steps, (min(256, resolution) // steps) * steps)
    max_reso = math.ceil(resolution / steps) * steps
    return min_reso, max_reso


def validate_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``train.extra``: real option names of the release, right TOML types, not workflow-owned."""
    checked: dict[str, Any] = {}
    for key, value in dict(extra or {}).items():
        where = f"train.extra.{key}"
        if key in RESERVED_EXTRA:
            raise ConfigError(where, f"cannot be set here: {RESERVED_EXTRA[key]}")
        spec = load_option_specs()[TRAIN_SCOPE].get(key)
        if spec is None:
            raise ConfigError(where, f"not an option of sdxl_train_network.py {SD_SCRIPTS_RELEASE}")
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


def build_train_options(
    cfg: Mapping[str, Any],
    *,
    output_dir: str,
    sample_prompts_path: str | None,
    logging_dir: str | None = None,
) -> dict[str, Any]:
    """train.toml as nested tables (sd-scripts flattens them); defaults fit a 24 GB card.

    ``cfg`` is the validated ``train`` config section.
    """
    extra = validate_extra(cfg.get("extra"))
    train_unet_only = bool(extra.get("network_train_unet_only", cfg.get("network_train_unet_only", True)))
    cache_te = bool(extra.get("cache_text_encoder_outputs", cfg.get("cache_text_encoder_outputs", True)))
    if cache_te and not train_unet_only:
        raise ConfigError(
            "train.cache_text_encoder_outputs", "needs train.network_train_unet_only (text encoders frozen)"
        )
    if cfg.get("lr_scheduler", "constant") == "constant" and int(cfg.get("lr_warmup_steps", 0)) > 0:
        raise ConfigError("train.lr_warmup_steps", "needs lr_scheduler 'constant_with_warmup' (or another)")
    options: dict[str, Any] = {
        "model": {
            "pretrained_model_name_or_path": str(cfg["base_model"]),
            "no_half_vae": True,  # SDXL's VAE overflows in half precision; it only runs while caching
        },
        "network": {
            "network_module": "networks.lora",
            "network_dim": int(cfg["network_dim"]),
            "network_alpha": float(cfg["network_alpha"]),
            "network_train_unet_only": train_unet_only,
        },
        "optimizer": {
            "optimizer_type": str(cfg["optimizer_type"]),
            "learning_rate": float(cfg["learning_rate"]),
            "lr_scheduler": str(cfg.get("lr_scheduler", "constant")),
            "lr_warmup_steps": int(cfg.get("lr_warmup_steps", 0)),
        },
        "training": {
            "mixed_precision": str(cfg.get("mixed_precision", "bf16")),
            "save_precision": str(cfg.get("save_precision", "bf16")),
            "sdpa": True,
            "gradient_checkpointing": bool(cfg.get("gradient_checkpointing", True)),
            "gradient_accumulation_steps": int(cfg["gradient_accumulation_steps"]),
            "max_train_epochs": int(cfg["max_train_epochs"]),
            "seed": int(cfg.get("seed", 42)),
            "cache_latents": True,
            "cache_latents_to_disk": True,
            "cache_text_encoder_outputs": cache_te,
            "cache_text_encoder_outputs_to_disk": cache_te,
            "max_data_loader_n_workers": int(cfg.get("max_data_loader_n_workers", 1)),
        },
        "saving": {
            "output_dir": output_dir,
            "output_name": str(cfg["output_name"]),
            "save_model_as": "safetensors",
            "save_every_n_epochs": int(cfg["save_every_n_epochs"]),
            "save_state": True,
        },
    }
    if logging_dir:
        options["saving"]["logging_dir"] = logging_dir
    if sample_prompts_path and int(cfg.get("sample_every_n_epochs", 0)) > 0:
        options["sample"] = {
            "sample_prompts": sample_prompts_path,
            "sample_every_n_epochs": int(cfg["sample_every_n_epochs"]),
            "sample_sampler": str(cfg.get("sample_sampler", "euler_a")),
        }
    if extra:
        _drop_overridden(options, extra)
        options["extra"] = extra
    problems = check_train_options(options)
    if problems:
        raise ConfigError("train", problems[0])
    return options


def _drop_overridden(options: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """An option set in train.extra replaces the workflow's default (one key, one place in the file)."""
    for table in options.values():
        for key in list(table):
            if key in extra:
                del table[key]


def build_dataset_config(
    cfg: Mapping[str, Any], *, image_dir: str, reg_dir: str | None, class_word: str
) -> dict[str, Any]:
    """dataset.toml: the crops as one subset (trigger kept first), regularisation images as an is_reg subset.

    Captions already start with the trigger word and the class word (the caption stage writes them);
    ``keep_tokens = 1`` keeps the trigger first if shuffling is ever switched on.
    """
    resolution = int(cfg["resolution"])
    steps = int(cfg.get("bucket_reso_steps", 64))
    min_reso, max_reso = bucket_limits(resolution, steps)
    general: dict[str, Any] = {
        "resolution": resolution,
        "batch_size": int(cfg["batch_size"]),
        "enable_bucket": True,
        "bucket_no_upscale": bool(cfg.get("bucket_no_upscale", True)),
        "bucket_reso_steps": steps,
        "min_bucket_reso": min_reso,
        "max_bucket_reso": max_reso,
        "caption_extension": ".txt",
        "keep_tokens": 1,
        "shuffle_caption": False,  # cached text-encoder outputs forbid shuffling
        "flip_aug": bool(cfg.get("flip_aug", False)),
    }
    subsets: list[dict[str, Any]] = [{"image_dir": image_dir, "num_repeats": int(cfg["num_repeats"])}]
    if reg_dir:
        subsets.append(
            {
                "image_dir": reg_dir,
                "is_reg": True,
                "class_tokens": class_word,
                "num_repeats": 1,
                "keep_tokens": 0,
            }
        )
    doc = {"general": general, "datasets": [{"subsets": subsets}]}
    problems = check_dataset_config(doc)
    if problems:
        raise ConfigError("train", problems[0])
    return doc


DEFAULT_SAMPLE_PROMPTS = (
    "{trigger} {class_word}, headshot portrait, looking at the camera, soft studio light, neutral background",
    "{trigger} {class_word}, close-up photo, smiling, outdoors, natural light, shallow depth of field",
    "{trigger} {class_word}, profile view, dramatic lighting, black and white photo",
)

_OPTION_FLAG = re.compile(r"\s--[a-z]+\b", re.IGNORECASE)


def sample_prompts_text(
    prompts: list[str] | tuple[str, ...] | None, *, trigger: str, class_word: str, resolution: int
) -> str:
    """One prompt a line in sd-scripts' format; ``{trigger}``/``{class_word}`` filled in.

    A prompt without the trigger gets it in front, since the samples are there to show the learnt face.
    Size, seed, steps, CFG scale and a negative prompt are appended unless the line sets its own options.
    """
    lines = []
    for i, template in enumerate(prompts or DEFAULT_SAMPLE_PROMPTS):
        text = " ".join(str(template).split())  # one line each: sd-scripts reads the file line by line
        if not text:
            continue
        text = text.replace("{trigger}", trigger).replace("{class_word}", class_word)
        if trigger not in text.split(" --")[0]:
            text = f"{trigger}, {text}"
        if not _OPTION_FLAG.search(text):
            text += f" --w {resolution} --h {resolution} --d {1000 + i} --s 28 --l 7.0"
            text += f" --n {DEFAULT_NEGATIVE_PROMPT}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def sample_steps_per_prompt(prompt_line: str) -> int:
    """Sampling steps a prompt line asks for (sd-scripts' default is 30)."""
    match = re.search(r"\s--s (\d+)", prompt_line)
    return max(1, min(1000, int(match.group(1)))) if match else 30


def prompt_sampling_steps(prompts_text: str) -> list[int]:
    """Sampling steps of each prompt line of a sample-prompts file (what the estimate prices)."""
    return [sample_steps_per_prompt(line) for line in prompts_text.splitlines() if line.strip()]
