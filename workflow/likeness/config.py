"""The one config path: JSON Schema files under workflow/schemas, defaults filled once, frozen settings.

``config.schema.yaml`` holds the top level; each stage keeps its own section schema in
``<section>.schema.yaml`` (select, caption, train, ...), merged in here, so that a stage's keys, defaults
and documentation live beside each other. The schemas are the single source of defaults and types:

- ``validate_config(config, command_line)`` fills the defaults into Snakemake's ``config`` dict (rules
  pass sections of it as params), reads the values given with ``--config`` (``command_line``: Snakemake's
  ``workflow.config_settings.overwrite_config``) as the schema's types where that is unambiguous, validates, and
  returns frozen :class:`Settings`: one :class:`Section` per object in the schema, with one attribute per
  key, built from the schema itself (a key that is a Python keyword, ``import``, becomes ``import_``).
- ``section_settings("train", values)`` rebuilds a section's frozen settings inside a job from the
  validated dict a rule passed as a param. Stages read attributes and never re-check or re-default a key.

Errors are one line naming the key (ConfigError).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import keyword
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import yaml

from likeness import WORKFLOW_DIR
from likeness.errors import ConfigError, LikenessError

SCHEMA_DIR = WORKFLOW_DIR / "schemas"
# The schemas are read on every parse: libyaml's loader where PyYAML has it (ten times faster), else PyYAML's.
_SCHEMA_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_SCHEMA_LOADER)  # a safe loader: CSafeLoader or SafeLoader


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    schema = _load_yaml((schema_dir / "config.schema.yaml").read_text())
    for section_file in sorted(schema_dir.glob("*.schema.yaml")):
        section = section_file.name.removesuffix(".schema.yaml")
        if section != "config":
            section_schema = _load_yaml(section_file.read_text())
            # A nested "$schema" would make jsonschema switch to a plain validator for the section,
            # which fills no defaults: each file keeps it for editors, the merged schema drops it.
            section_schema.pop("$schema", None)
            section_schema.setdefault("default", {})
            schema["properties"][section] = section_schema
    return schema


@functools.cache
def _schema(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    return load_schema(schema_dir)


def _with_defaults(validator_class: type) -> type:
    """A validator that fills ``default`` values before checking properties (parents before children)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator[jsonschema.ValidationError]:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    default = subschema["default"]
                    instance[name] = (
                        dict(default)
                        if isinstance(default, dict)
                        else (list(default) if isinstance(default, list) else default)
                    )
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_of(error: jsonschema.ValidationError) -> str:
    path = [str(part) for part in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        if unknown:
            path.append(unknown[0])
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            path.append(missing[0])
    return ".".join(path) or "(top level)"


def _message_of(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return "unknown key (a typo? see workflow/schemas/ for the keys that exist)"
    if error.validator == "required":
        return "is required"
    if error.validator == "type":
        return f"{error.instance!r} is not of type {error.validator_value}"
    return error.message


def check_yaml_syntax(path: str | Path) -> None:
    """Raise LikenessError naming ``path``, line and column when the YAML file does not parse (Snakemake's
    own message names neither). A missing file is left to Snakemake, which says so."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = error.problem or error.context or "not valid YAML"
        raise LikenessError(f"{where}: {problem} (check the indentation of that line and the one before)") from None
    except yaml.YAMLError as error:
        raise LikenessError(f"{path}: not valid YAML ({error})") from None


# -- command-line values ---------------------------------------------------------------------------
# `snakemake --config select='{top_n: 5}'` parses the value with YAML's BaseLoader, which leaves every
# scalar a string ({'top_n': '5'}). A string is replaced by its YAML reading only where the schema
# refuses the string and accepts the reading: unambiguous, so "2024-01-01" stays a date string and
# "auto" stays "auto", while "5" becomes 5 and "false" becomes False.


def _accepts(schema: Mapping[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def _type_accepts(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` has a type the schema allows (its range, enum and pattern aside)."""
    if "type" in schema:
        return _accepts({"type": schema["type"]}, value)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    return bool(alternatives) and any(_type_accepts(option, value) for option in alternatives)


def _command_line_value(value: str, schema: Mapping[str, Any]) -> Any:
    if _accepts(schema, value):
        return value
    try:
        reading = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    # A reading of the right type that the schema still refuses (top_n 0: below the minimum) is kept, so
    # that the error names the range, as the same value in config.yaml does, not the string's type.
    if isinstance(reading, bool | int | float) or reading is None:
        return reading if _accepts(schema, reading) or _type_accepts(schema, reading) else value
    return value


def _subschemas(schema: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    properties = schema.get("properties", {})
    if key in properties:
        return properties[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def coerce_command_line(instance: Any, schema: Mapping[str, Any], given: Any) -> Any:
    """``instance`` with the strings given on the command line (``given``, the same shape) read as the
    numbers, booleans or nulls the schema wants. Values from config files are left as YAML read them: a
    quoted "yes" there is a string, and the schema says so."""
    if isinstance(instance, str) and isinstance(given, str):
        return _command_line_value(instance, schema)
    if isinstance(instance, dict) and isinstance(given, Mapping):
        for key, value in instance.items():
            subschema = _subschemas(schema, key)
            if subschema is not None and key in given:
                instance[key] = coerce_command_line(value, subschema, given[key])
        return instance
    if isinstance(instance, list) and isinstance(given, list) and isinstance(schema.get("items"), Mapping):
        return [coerce_command_line(item, schema["items"], item) for item in instance]
    return instance


# -- frozen settings built from the schema ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every settings section: frozen, one attribute per schema key."""

    def as_dict(self) -> dict[str, Any]:
        """The plain values again (lists and dicts), as the validated config holds them."""
        return {field.metadata["key"]: _thaw(getattr(self, field.name)) for field in dataclasses.fields(self)}


_JSON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": tuple,
    "object": Mapping,
    "null": type(None),
}


def _python_type(schema: Mapping[str, Any]) -> Any:
    kinds = schema.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if kinds:
        types = [_JSON_TYPES[kind] for kind in kinds]
        return functools.reduce(lambda a, b: a | b, types)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        return functools.reduce(lambda a, b: a | b, [_python_type(option) for option in alternatives])
    if "const" in schema:
        return type(schema["const"])
    if "enum" in schema:
        return functools.reduce(lambda a, b: a | b, sorted({type(v) for v in schema["enum"]}, key=str))
    return Any


def field_name(key: str) -> str:
    """The attribute of a schema key: the key itself, with ``_`` after a Python keyword (``import_``)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def _is_section(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" and bool(schema.get("properties"))


@functools.cache
def _section_class(path: str, schema_dir: Path = SCHEMA_DIR) -> type[Section]:
    schema = _schema_at(path, schema_dir)
    fields = []
    for key, subschema in schema["properties"].items():
        kind = (
            _section_class(f"{path}.{key}" if path else key, schema_dir)
            if _is_section(subschema)
            else _python_type(subschema)
        )
        fields.append((field_name(key), kind, dataclasses.field(metadata={"key": key})))
    name = "".join(part.title() for part in path.replace("_", ".").split(".")) + "Settings" if path else "Settings"
    return dataclasses.make_dataclass(name, fields, bases=(Section,), frozen=True)


def _schema_at(path: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    schema = _schema(schema_dir)
    for part in filter(None, path.split(".")):
        schema = schema["properties"][part]
    return schema


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Section):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _build(path: str, values: Mapping[str, Any], schema_dir: Path = SCHEMA_DIR) -> Section:
    cls = _section_class(path, schema_dir)
    arguments = {}
    for field in dataclasses.fields(cls):
        key = field.metadata["key"]
        value = values.get(key)
        if isinstance(field.type, type) and issubclass(field.type, Section):
            value = _build(f"{path}.{key}" if path else key, value or {}, schema_dir)
        arguments[field.name] = _freeze(value)
    return cls(**arguments)


def section_settings(section: str, values: Mapping[str, Any]) -> Section:
    """Frozen settings of one validated section (``"train"``), as a job gets it from a rule's params."""
    return _build(section, values)


def validate_section(section: str, values: Mapping[str, Any] | None) -> Section:
    """One section validated on its own (defaults filled), for a tool that gets only that section: a
    command-line entry point, a benchmark, a test. ConfigError names the key."""
    schema = _schema()["properties"][section]
    instance = copy.deepcopy(dict(values or {}))
    errors = sorted(_Validator(schema).iter_errors(instance), key=lambda e: (list(e.absolute_path), e.validator))
    if errors:
        key = _key_of(errors[0])
        raise ConfigError(section if key == "(top level)" else f"{section}.{key}", _message_of(errors[0]))
    return _build(section, instance)


def validate_config(
    config: dict[str, Any], command_line: Mapping[str, Any] | None = None, schema_dir: Path = SCHEMA_DIR
) -> Section:
    """Fill defaults into ``config`` in place, validate it, and return its frozen settings.

    ``command_line``: the values given with ``--config`` (already merged into ``config`` by Snakemake).
    Raises ConfigError (one line naming the key) for the first problem.
    """
    schema = _schema(schema_dir)
    coerce_command_line(config, schema, command_line or {})
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(e.absolute_path), e.validator))
    if errors:
        first = errors[0]
        raise ConfigError(_key_of(first), _message_of(first))
    return _build("", config, schema_dir)
