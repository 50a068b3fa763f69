"""sd-scripts' sample-prompt file: one prompt a line, options ``--w --h --d (seed) --s (steps) --l (cfg
scale) --n (negative prompt)`` after the text (library/train_util.py, sample_images)."""

from __future__ import annotations

import re
from collections.abc import Sequence

# What the samples are rendered with when a prompt line sets no options of its own.
SAMPLE_STEPS = 28
SAMPLE_SCALE = 7.0
FIRST_SEED = 1000
NEGATIVE_PROMPT = "lowres, blurry, bad anatomy, deformed face, watermark, text"
DEFAULT_STEPS = 30  # sd-scripts' own, for a line without --s
_OPTION_FLAG = re.compile(r"\s--[a-z]+\b", re.IGNORECASE)
_STEPS_OPTION = re.compile(r"\s--s (\d+)")


def sample_prompts_text(prompts: Sequence[str], *, trigger: str, class_word: str, resolution: int) -> str:
    """One prompt a line in sd-scripts' format; ``{trigger}``/``{class_word}`` filled in.

    A prompt without the trigger gets it in front, since the samples are there to show the learnt face.
    Size, seed, steps, CFG scale and a negative prompt are appended unless the line sets its own options.
    """
    lines = []
    for i, template in enumerate(prompts):
        text = " ".join(str(template).split())  # one line each: sd-scripts reads the file line by line
        if not text:
            continue
        text = text.replace("{trigger}", trigger).replace("{class_word}", class_word)
        if trigger not in text.split(" --")[0]:
            text = f"{trigger}, {text}"
        if not _OPTION_FLAG.search(text):
            text += f" --w {resolution} --h {resolution} --d {FIRST_SEED + i} --s {SAMPLE_STEPS} --l {SAMPLE_SCALE}"
            text += f" --n {NEGATIVE_PROMPT}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def sample_steps_per_prompt(prompt_line: str) -> int:
    """Sampling steps a prompt line asks for (sd-scripts clamps --s to 1..1000)."""
    match = _STEPS_OPTION.search(prompt_line)
    return max(1, min(1000, int(match.group(1)))) if match else DEFAULT_STEPS


def prompt_sampling_steps(prompts_text: str) -> list[int]:
    """Sampling steps of each prompt line of a sample-prompts file (what the estimate prices)."""
    return [sample_steps_per_prompt(line) for line in prompts_text.splitlines() if line.strip()]
