"""The report's first page: what this run did, read back from the files the workflow already wrote.

The person and the photo manager the faces came from (the export's manager, not an assumed PhotoPrism),
the faces kept and excluded by reason (results/dataset/manifest.tsv, excluded.tsv), the training's state
and estimated cost (results/train/status.json, else the run folder's estimate.json), and the chosen epoch
with its identity distance (results/lora/<trigger>.json). Three outputs share these facts:

* the report's intro (``report:`` in report.smk reads it once this job has written it), the template
  workflow/report/workflow.rst with the source named and the facts added, so the report opens on them;
* an HTML page with the same facts (the report's "0. Summary");
* an HTML table of every selected face's score and the parts it adds up from (likeness.select.ranking).

Like the other figures, bad input never raises: a missing or unreadable file becomes a "not yet" line.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.config import section_settings
from likeness.errors import LikenessError
from likeness.joblog import JobLog
from likeness.report.estimate_page import hours_text
from likeness.report.sheets import PathLike

# The line of workflow/report/workflow.rst that defines |source|: the job writes the manager's name there.
SOURCE_DEFINITION = re.compile(r"^\.\. \|source\| replace:: .*$", re.MULTILINE)
# The template's marker line where the run's facts go (the static template, before the job ran, has none).
FACTS_MARKER = ".. likeness: the run's facts"
UNKNOWN_SOURCE = "a photo manager"


def source_name(manager: str, kind: str = "") -> str:
    """The photo manager's own name (PhotoPrism, Immich, digiKam) from the export's manager, else from
    source.kind; "a photo manager" where neither is known (an export read back from markers.tsv)."""
    key = (manager or kind or "").strip().lower()
    return tables.MANAGER_NAMES.get(key, UNKNOWN_SOURCE)


@dataclass
class RunFacts:
    """What the first page says: (label, text) rows, and the excluded faces counted by reason."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[tuple[str, int]] = field(default_factory=list)  # (reason, faces), in the selection's order


def _json(path: PathLike | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rows(path: PathLike, columns: Sequence[str]) -> list[dict[str, str]] | None:
    try:
        return tables.read_table(path, columns)
    except LikenessError:
        return None


def excluded_counts(excluded_rows: Sequence[Mapping[str, str]]) -> list[tuple[str, int]]:
    """(reason, faces) in the select job's words (tables.exclusion_parts: archived and missing photos by
    that word, not as "unreadable"), in the selection's order."""
    parts = tables.exclusion_parts((row.get("reason_key", ""), row.get("reason", "")) for row in excluded_rows)
    counts = []
    for part in parts:
        label, _, count = part.rpartition(" ")
        counts.append((label, int(count)))
    return counts


def estimate_of(status: Mapping[str, Any]) -> dict[str, Any]:
    """The training estimate: the one status.json records (a run that stopped at 'ready'), else the run
    folder's estimate.json (every prepared run writes it; a finished run's status does not repeat it)."""
    inner = status.get("estimate")
    if isinstance(inner, dict):
        return inner
    run_dir = status.get("run_dir")
    return _json(Path(str(run_dir)) / "estimate.json") if run_dir else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cost_text(estimate: Mapping[str, Any], currency: str) -> str:
    """ "0.92 EUR for 1.33 h (1 h 20 min) on an RTX 4090", or why there is none."""
    cost, hours = _number(estimate.get("cost")), _number(estimate.get("total_hours"))
    if cost is None or hours is None:
        return "not estimated yet (the training is not prepared)"
    gpu = estimate.get("gpu")
    return f"{cost:.2f} {currency} for {hours_text(hours)}" + (f" on {gpu}" if gpu else "")


def epoch_text(best: Mapping[str, Any]) -> str:
    """The chosen epoch and its median identity distance to the selected faces, or why there is none."""
    if best.get("state") != "done" or best.get("epoch") is None:
        why = best.get("reason") or "the training has not finished"
        return f"none chosen yet ({why})"
    epoch = best["epoch"]
    score = (best.get("scores") or {}).get(str(epoch)) or {}
    median = _number(score.get("median"))
    if median is None:
        return f"epoch {epoch}, unscored ({best.get('why', 'no identity distance')})"
    scored = f", {score.get('scored')} of {score.get('headshots')} headshots scored" if "scored" in score else ""
    return f"epoch {epoch}: median identity distance {median:.3f} to the selected faces{scored}"


def run_facts(
    *,
    person: str,
    source: str,
    manifest: PathLike,
    excluded: PathLike,
    status_json: PathLike,
    best_lora_json: PathLike,
    currency: str,
) -> RunFacts:
    """The first page's facts from the workflow's own files (a missing one reads as "not yet")."""
    facts = RunFacts()
    facts.rows += [("Person", person), ("Source", source)]
    kept = _rows(manifest, ("image",))
    excluded_rows = _rows(excluded, ("reason_key", "reason")) or []
    if kept is None:
        facts.rows.append(("Faces", "not selected yet"))
    else:
        facts.excluded = excluded_counts(excluded_rows)
        by_masking = sum(1 for row in kept if row["image"].endswith(".png"))  # a masked face trains as PNG
        faces = tables.kept_line(len(kept), by_masking, len(kept) + len(excluded_rows), [])
        facts.rows.append(("Faces", faces))
    status = _json(status_json)
    training = status.get("state")
    facts.rows.append(("Training", f"{training} ({status.get('run_dir')}/)" if training else "not prepared yet"))
    facts.rows.append(("Estimated cost", cost_text(estimate_of(status), currency)))
    best = _json(best_lora_json)
    facts.rows.append(("Chosen epoch", epoch_text(best)))
    base = best.get("base_model") if isinstance(best.get("base_model"), dict) else {}
    if base and base.get("name"):
        facts.rows.append(("Base model", str(base["name"])))
    return facts


# --- the intro (reStructuredText, rendered by Snakemake's Jinja and docutils) -----------------------------


def _rst(text: str) -> str:
    """``text`` as literal reStructuredText inside Snakemake's Jinja template: rst's markup characters
    backslash-escaped, and every "{" written as a Jinja expression, so a name with {{ or * stays as typed."""
    escaped = re.sub(r"([\\`*_|\[\]<>])", r"\\\1", " ".join(text.split()))
    return re.sub(r"\{", lambda _m: "{{ '{' }}", escaped)


def intro_text(template: str, source: str, facts: RunFacts) -> str:
    """The template with ``|source|`` defined as the manager's name and the facts after its marker line."""
    text = SOURCE_DEFINITION.sub(lambda _m: f".. |source| replace:: {_rst(source)}", template)
    lines = ["This run", "--------", ""]
    lines += [f"* **{_rst(label)}**: {_rst(value)}" for label, value in facts.rows]
    if facts.excluded:
        lines.append("* **Excluded**: " + _rst(", ".join(f"{reason} {count}" for reason, count in facts.excluded)))
    block = "\n".join(lines) + "\n"
    if FACTS_MARKER in text:
        return text.replace(FACTS_MARKER, block.rstrip("\n"), 1)
    return text.rstrip("\n") + "\n\n" + block


# --- the HTML pages ---------------------------------------------------------------------------------------

_STYLE = """<style>
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 1em 0.3em 0; text-align: left; }
th { font-weight: normal; color: #555; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
</style>"""


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"{_STYLE}</head><body>\n<h3>{html.escape(title)}</h3>\n{body}</body></html>\n"
    )


def summary_html(facts: RunFacts) -> str:
    rows = [f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>\n" for label, text in facts.rows]
    body = "<table>\n" + "".join(rows) + "</table>\n"
    if facts.excluded:
        body += "<h4>Excluded faces by reason</h4>\n<table>\n"
        body += "".join(
            f'<tr><th>{html.escape(reason)}</th><td class="n">{count}</td></tr>\n' for reason, count in facts.excluded
        )
        body += "</table>\n"
    return _page("This run", body)


def scores_html(manifest_rows: Sequence[Mapping[str, str]]) -> str:
    """Every selected face in rank order with its score and the parts it is the sum of (manifest.tsv's
    score_* columns: each term's weight times its 0-1 value, likeness.select.ranking)."""
    head = ["Rank", "Marker", "Taken", "Score", *(part.capitalize() for part in tables.SCORE_PARTS)]
    lines = ["<table>\n<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>\n"]
    for row in manifest_rows:
        cells = [row.get("rank", ""), row.get("marker_uid", ""), (row.get("taken_at") or "")[:10] or "no date"]
        numbers = [row.get("score", ""), *(row.get(column, "") for column in tables.SCORE_PART_COLUMNS)]
        lines.append(
            "<tr>"
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
            + "".join(f'<td class="n">{html.escape(number or "-")}</td>' for number in numbers)
            + "</tr>\n"
        )
    lines.append("</table>\n")
    note = (
        "<p>The score is the sum of its parts: sharpness 0.35, resolution 0.25, exposure 0.15, crowding 0.10,"
        " recency 0.10 and detector confidence 0.05, each weight times a 0-1 term (README: Select).</p>\n"
    )
    if not manifest_rows:
        return _page("Selected faces: score parts", "<p>No face is selected yet.</p>\n")
    return _page(f"Selected faces: score parts ({len(manifest_rows)})", note + "".join(lines))


def summary_job(
    manifest: PathLike,
    excluded: PathLike,
    status_json: PathLike,
    best_lora_json: PathLike,
    template: PathLike,
    out_html: PathLike,
    out_scores: PathLike,
    out_intro: PathLike,
    *,
    person: str,
    source: str,
    train: Mapping[str, Any],
    log: JobLog,
) -> RunFacts:
    """The report_summary job: the intro, the summary page and the score table (each written only when
    it changes). ``source``: the manager's name (source_name); ``train``: the train section (currency)."""
    settings = section_settings("train", train)
    facts = run_facts(
        person=person,
        source=source,
        manifest=manifest,
        excluded=excluded,
        status_json=status_json,
        best_lora_json=best_lora_json,
        currency=settings.currency,  # type: ignore[attr-defined]
    )
    write_if_changed(out_html, summary_html(facts).encode("utf-8"))
    write_if_changed(out_scores, scores_html(_rows(manifest, ()) or []).encode("utf-8"))
    intro = intro_text(Path(template).read_text(encoding="utf-8"), source, facts)
    write_if_changed(out_intro, intro.encode("utf-8"))
    log(f"summary: {person} from {source}; " + "; ".join(f"{label.lower()}: {text}" for label, text in facts.rows[2:]))
    return facts
