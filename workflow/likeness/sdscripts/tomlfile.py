"""TOML text of sd-scripts' config files, written through tomli-w.

tomli-w writes every key and value (it escapes what TOML requires, e.g. U+007F and other control
characters). The layout stays the one sd-scripts documents and the workflow has always written: scalars
first, then ``[table]`` sections, then ``[[array.of.tables]]`` with one level of nesting
(``[[datasets]]`` / ``[[datasets.subsets]]``). tomli-w alone would write a short array of tables inline
(``subsets = [{ ... }]``) and a long one as tables, so the file's shape would depend on the length of a
path; rendering each table's own pairs with tomli-w keeps one shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import tomli_w


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _check_finite(value: Any) -> None:
    """sd-scripts has no use for inf or nan (TOML can hold them): a non-finite float is a bug upstream."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write non-finite float {value!r} to TOML")
    if isinstance(value, list | tuple):
        for item in value:
            _check_finite(item)


def _pairs(table: Mapping[str, Any]) -> list[str]:
    """``key = value`` lines of a table's own values (nested tables are written as their own sections)."""
    own = {key: value for key, value in table.items() if not isinstance(value, Mapping) and not _is_table_array(value)}
    for value in own.values():
        _check_finite(value)
    return tomli_w.dumps(own).splitlines()


def dumps_toml(doc: Mapping[str, Any]) -> str:
    """TOML text for ``{key: scalar | list | table | list of tables (one level of nesting)}``."""
    lines = _pairs(doc)
    for key, value in doc.items():
        if isinstance(value, Mapping):
            lines += ["", f"[{key}]", *_pairs(value)]
    for key, value in doc.items():
        if _is_table_array(value):
            for item in value:
                lines += ["", f"[[{key}]]", *_pairs(item)]
                for sub_key, sub_value in item.items():
                    if _is_table_array(sub_value):
                        for sub_item in sub_value:
                            lines += ["", f"[[{key}.{sub_key}]]", *_pairs(sub_item)]
    return "\n".join(lines).lstrip("\n") + "\n"
