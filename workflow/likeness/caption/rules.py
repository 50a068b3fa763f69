"""Caption text from tag probabilities: ``<trigger>, <class word>, <WD14 tags>``.

The rules follow sd-scripts' WD14 script: general and character thresholds, tags in the tagger's order,
``--remove_underscore`` (only in tags longer than 3 characters, so ``^_^`` stays). On top of it:
exclusions, replacements, and pruning of tags that describe the person's fixed traits (hair and eye
colour, facial hair, ...) so that the trigger word learns them instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from likeness import RESOURCES
from likeness.caption.model import TagTable
from likeness.caption.wd14 import CHARACTER_CATEGORY, GENERAL_CATEGORY, RATING_CATEGORY
from likeness.config import Section
from likeness.errors import ConfigError

DEFAULT_TRAIT_TAGS_FILE = RESOURCES / "tagger" / "trait_tags.txt"  # caption.trait_tags_file: null
# Tags for several people, dropped from a masked face's caption (the file says why).
GROUP_TAGS_FILE = RESOURCES / "tagger" / "group_tags.txt"


def tag_key(tag: str) -> str:
    """How tag names are compared: case, spaces and underscores don't matter ('Brown hair' = 'brown_hair')."""
    return " ".join(tag.replace("_", " ").lower().split())


def display_tag(name: str, remove_underscore: bool) -> str:
    """sd-scripts' ``--remove_underscore``: only tags longer than 3 characters, so kaomoji keep theirs."""
    return name.replace("_", " ") if remove_underscore and len(name) > 3 else name


def read_trait_tags(path: str | os.PathLike[str], key: str = "caption.trait_tags_file") -> frozenset[str]:
    """Tag keys from a tag list: one tag a line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    return frozenset(tag_key(line) for line in lines if line.strip() and not line.lstrip().startswith("#"))


@dataclass(frozen=True)
class CaptionRules:
    """Everything but the probabilities that decides a caption, derived from the ``caption`` settings."""

    general_threshold: float
    character_threshold: float
    include_rating: bool
    remove_underscore: bool
    excluded: frozenset[str]  # tag keys
    replacements: Mapping[str, str]  # tag key -> text
    traits: frozenset[str]  # tag keys pruned (empty when pruning is off)
    group: frozenset[str] = frozenset()  # tag keys dropped from a masked face's caption (GROUP_TAGS_FILE)

    @classmethod
    def from_settings(cls, settings: Section) -> CaptionRules:
        traits: frozenset[str] = frozenset()
        if settings.prune_traits:
            traits = read_trait_tags(settings.trait_tags_file or DEFAULT_TRAIT_TAGS_FILE)
        return cls(
            general_threshold=settings.general_threshold,
            character_threshold=settings.character_threshold,
            include_rating=settings.include_rating,
            remove_underscore=settings.remove_underscore,
            excluded=frozenset(tag_key(tag) for tag in settings.exclude_tags),
            replacements={tag_key(source): target.strip() for source, target in settings.replace_tags.items()},
            traits=traits,
            group=read_trait_tags(GROUP_TAGS_FILE, "caption (group tag list)"),
        )


def _passes(probability: np.float32, category: int, rules: CaptionRules) -> bool:
    # Compared in float32, as numpy compares sd-scripts' float32 outputs with a Python float threshold:
    # a probability stored as float32(0.35) passes the threshold 0.35.
    if category == GENERAL_CATEGORY:
        return bool(probability >= np.float32(rules.general_threshold))
    if category == CHARACTER_CATEGORY:
        return bool(probability >= np.float32(rules.character_threshold))
    return False  # ratings are chosen by argmax below; other categories are not WD14 caption tags


def _final_text(name: str, rules: CaptionRules, masked: bool = False) -> str | None:
    """The caption text for one tag the model emitted, or None when a rule drops it."""
    key = tag_key(name)
    if key in rules.traits or key in rules.excluded or (masked and key in rules.group):
        return None
    text = rules.replacements.get(key, display_tag(name, rules.remove_underscore))
    return None if tag_key(text) in rules.excluded else text


def caption_tags(probabilities: np.ndarray, table: TagTable, rules: CaptionRules, masked: bool = False) -> list[str]:
    """Tags for one face, in the tagger's order; the rating, when wanted, comes last. ``masked``: the
    face's image carries a loss mask over other people (likeness.select.masks): group tags are dropped."""
    if probabilities.shape != (len(table),):
        raise ValueError(f"expected {len(table)} probabilities, got shape {probabilities.shape}")
    chosen = [
        table.names[index]
        for index, (probability, category) in enumerate(zip(probabilities, table.categories, strict=True))
        if _passes(np.float32(probability), category, rules)
    ]
    if rules.include_rating:
        ratings = [index for index, category in enumerate(table.categories) if category == RATING_CATEGORY]
        if ratings:
            chosen.append(table.names[max(ratings, key=lambda index: probabilities[index])])
    texts = (_final_text(name, rules, masked) for name in chosen)
    return [text for text in texts if text is not None]


def caption_line(trigger: str, class_word: str, tags: Iterable[str]) -> str:
    """``trigger, class word, tag, ...`` with duplicates (after replacement) dropped."""
    words: list[str] = []
    seen: set[str] = set()
    for word in (trigger, class_word, *tags):
        key = tag_key(word)
        if word and key not in seen:
            seen.add(key)
            words.append(word)
    return ", ".join(words)
