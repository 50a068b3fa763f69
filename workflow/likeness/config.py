"""Config validation: JSON Schema files under workflow/schemas, one-line errors that name the key.

``config.schema.yaml`` holds the top level; each stage keeps its own section schema in
``<section>.schema.yaml`` (select, caption, train, ...), merged in here, so that a stage's keys, defaults
and documentation live beside each other. Defaults from the schemas are filled into the config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    schema = yaml.safe_load((schema_dir / "config.schema.yaml").read_text())
    for section_file in sorted(schema_dir.glob("*.schema.yaml")):
        section = section_file.name.removesuffix(".schema.yaml")
        if section != "config":
            section_schema = yaml.safe_load(section_file.read_text())
            # A nested "$schema" would make jsonschema switch to a plain validator for the section,
            # which fills no defaults: each file keeps it for editors, the merged schema drops it.
            section_schema.pop("$schema", None)
            section_schema.setdefault("default", {})
            schema["properties"][section] = section_schema
    return schema


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


def validate_config(config: dict[str, Any], schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """Fill defaults into ``config`` in place and validate it; raise ConfigError for the first problem."""
    schema = load_schema(schema_dir)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(e.absolute_path), e.validator))
    if errors:
        first = errors[0]
        raise ConfigError(_key_of(first), _message_of(first))
    return config
