"""Reading sd-scripts' console output: its tqdm progress bar, for live progress and the measured speed.

The bar: ``steps:  50%|#####     | 10/20 [00:30<00:30,  3.00s/it, avr_loss=0.1]``; sd-scripts prints
``epoch 3/10`` lines between epochs and puts avr_loss (the running mean of the epoch's losses) into the
bar's postfix. Loss and learning rate for the report come from the TensorBoard event files sd-scripts
writes into train.toml's logging_dir; the console's loss stays readable here for logs without them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TQDM_STEPS = re.compile(
    r"steps:\s*\d+%.*?\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+),\s*"
    r"(?P<rate>[\d.]+)(?P<unit>s/it|it/s)"
)
EPOCH_LINE = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$")
# "<n>/<total> [<elapsed><<remaining>, <rate>, key=value, ...]"; \b keeps val_avr_loss-like keys out.
LOSS_IN_BAR = re.compile(r"(\d+)/(\d+)\s*\[[^\]]*?\bavr_loss=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FRAGMENTS = re.compile(r"[\r\n]")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    left: str
    seconds_per_step: float


def fragments(text: str) -> list[str]:
    """The pieces of console output between carriage returns and newlines (tqdm redraws with \\r)."""
    return _FRAGMENTS.split(text)


def parse_progress(fragment: str) -> Progress | None:
    match = TQDM_STEPS.search(fragment)
    if not match:
        return None
    rate = float(match.group("rate"))
    if rate <= 0:
        return None
    seconds = rate if match.group("unit") == "s/it" else 1.0 / rate
    return Progress(int(match.group("n")), int(match.group("total")), match.group("left"), seconds)


def parse_epoch(fragment: str) -> str | None:
    """``"3/10"`` from sd-scripts' ``epoch 3/10`` line."""
    match = EPOCH_LINE.match(fragment)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def measured_progress(log_text: str, min_steps: int = 2) -> Progress | None:
    """The last progress bar line: its average s/step (sd-scripts' bar uses smoothing=0: a run average)
    and the steps it timed (``done``).

    A resumed run's bar counts only the steps it ran, so the figure is that invocation's own average.
    """
    last = None
    for fragment in fragments(log_text):
        progress = parse_progress(fragment)
        if progress and progress.done >= min_steps:
            last = progress
    return last


def measured_seconds_per_step(log_text: str, min_steps: int = 2) -> float | None:
    last = measured_progress(log_text, min_steps)
    return last.seconds_per_step if last else None


def loss_by_step(log_text: str) -> list[tuple[int, float]]:
    """(step, avr_loss) from the progress bar in a training log, sorted by step (the last value of a step)."""
    by_step: dict[int, float] = {}
    for fragment in fragments(_ANSI.sub("", log_text)):
        for match in LOSS_IN_BAR.finditer(fragment):
            loss = float(match.group(3))
            if math.isfinite(loss):
                by_step[int(match.group(1))] = loss
    return sorted(by_step.items())
