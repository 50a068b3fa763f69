"""The training estimate as a small HTML page: the numbers, each overhead's minutes, the budget line.

It reads the estimate the training job records in its status file (likeness.train.training) and the
train settings the estimate was made with (currency, budget). Bad input never raises: an unreadable
file becomes a sentence on the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from likeness.atomic import write_if_changed
from likeness.config import Section, section_settings
from likeness.joblog import JobLog
from likeness.report.sheets import PathLike

_LABELS = {
    "gpu": "GPU",
    "images": "Images",
    "repeats": "Repeats",
    "batch_size": "Batch size",
    "steps_per_epoch": "Steps per epoch",
    "epochs": "Epochs",
    "total_steps": "Total steps",
    "seconds_per_step": "Seconds per step",
    "total_hours": "Estimated time",
    "cost": "Estimated cost",
}
# Keys of the recorded estimate that the page shows otherwise (warning, overhead rows) or not at all
# (the text lines of the dry run say the same as the table).
_NOT_ROWS = ("lines", "overhead_seconds", "budget_warning", "warning", "warnings")


def hours_text(hours: float) -> str:
    whole = round(hours * 60)
    return f"{hours:.2f} h ({whole // 60} h {whole % 60:02d} min)"


def _format_value(key: str, value: Any, currency: str) -> str:
    if isinstance(value, bool) or value is None:
        return "yes" if value is True else "no" if value is False else "-"
    if key == "cost" and isinstance(value, int | float):
        return f"{value:.2f} {currency}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if key == "total_hours":
            return hours_text(value)
        if key == "seconds_per_step":
            return f"{value:.3g} s"
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def overhead_rows(estimate: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One row per overhead (model loading, caching, samples, saving, headshots) in minutes, then the sum."""
    overheads = estimate.get("overhead_seconds")
    if not isinstance(overheads, Mapping):
        return []
    seconds = {str(name): float(value) for name, value in overheads.items() if isinstance(value, int | float)}
    rows = [(f"Overhead: {name}", f"{value / 60:.1f} min") for name, value in seconds.items()]
    if rows:
        rows.append(("Overhead in all", f"{sum(seconds.values()) / 60:.1f} min"))
    return rows


def budget_row(estimate: Mapping[str, Any], max_gpu_hours: float) -> tuple[str, str] | None:
    """Whether the estimate fits train.max_gpu_hours (0 means no limit)."""
    hours = estimate.get("total_hours")
    if not isinstance(hours, int | float) or isinstance(hours, bool):
        return None
    if max_gpu_hours <= 0:
        return ("Budget", "no limit (train.max_gpu_hours 0)")
    if hours <= max_gpu_hours:
        verdict = f"fits ({max_gpu_hours - hours:.2f} h to spare)"
    else:
        verdict = f"does not fit: {hours - max_gpu_hours:.2f} h over"
    return ("Budget", f"{max_gpu_hours:g} GPU hours (train.max_gpu_hours): the estimate {verdict}")


def estimate_rows(estimate: Mapping[str, Any], currency: str, max_gpu_hours: float) -> list[tuple[str, str]]:
    """(label, text): the known keys in a fixed order, the other keys by name, the overheads, the budget."""
    keys = [key for key in _LABELS if key in estimate]
    keys += sorted(key for key in estimate if key not in _LABELS and key not in _NOT_ROWS)
    rows = [(_LABELS.get(key, key.replace("_", " ").capitalize()), _format_value(key, estimate[key], currency))
            for key in keys]  # fmt: skip
    rows += overhead_rows(estimate)
    budget = budget_row(estimate, max_gpu_hours)
    return [*rows, budget] if budget else rows


def warnings_of(estimate: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("budget_warning", "warning", "warnings"):
        value = estimate.get(key)
        if isinstance(value, str) and value.strip():
            found.append(value.strip())
        elif isinstance(value, list):
            found += [str(item) for item in value if str(item).strip()]
    return found


def estimate_of_status(record: Mapping[str, Any]) -> dict[str, Any]:
    """The training job's status file holds the estimate under "estimate": show it with the run's state."""
    inner = record.get("estimate")
    if not isinstance(inner, dict):
        return dict(record)
    return {**inner, "training": f"{record.get('state', '?')} in {record.get('run_dir', '?')}/"}


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Training estimate</title>
<style>
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 1em 0.3em 0; text-align: left; }
th { font-weight: normal; color: #555; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }
</style></head><body>
<h3>Training estimate</h3>
"""


def _read_record(path: PathLike) -> tuple[dict[str, Any], str]:
    """The JSON object in ``path`` and "" , or {} and why it could not be read."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return {}, f"the estimate could not be read ({type(error).__name__})"
    return (record, "") if isinstance(record, dict) else ({}, "the estimate is not a JSON object")


def estimate_html(
    estimate_json: PathLike, out_html: PathLike, currency: str, max_gpu_hours: float
) -> list[tuple[str, str]]:
    """Write the page for the estimate in ``estimate_json`` (a status file or a bare estimate); returns its rows."""
    record, problem = _read_record(estimate_json)
    estimate = estimate_of_status(record)
    rows = estimate_rows(estimate, currency, max_gpu_hours)
    parts = [_HTML_HEAD]
    if problem:
        parts.append(f'<p class="warning">{html.escape(problem)}: {html.escape(str(estimate_json))}</p>\n')
    parts += [f'<p class="warning">{html.escape(text)}</p>\n' for text in warnings_of(estimate)]
    if rows:
        parts.append("<table>\n")
        parts += [f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>\n" for label, text in rows]
        parts.append("</table>\n")
    parts.append("</body></html>\n")
    write_if_changed(out_html, "".join(parts).encode("utf-8"))
    return rows


def estimate_job(status_json: PathLike, out_html: PathLike, train: Mapping[str, Any], *, log: JobLog) -> None:
    """The report_estimate job: ``train`` is the rule's train section (currency and budget)."""
    settings: Section = section_settings("train", train)
    rows = estimate_html(status_json, out_html, settings.currency, settings.max_gpu_hours)  # type: ignore[attr-defined]
    log(f"estimate: {len(rows)} rows")
