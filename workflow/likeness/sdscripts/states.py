"""Reading what sd-scripts saved: LoRA checkpoints and resumable states, complete or cut short by a kill.

A state folder holds the LoRA weights, optimizer, scheduler, RNG states and ``train_state.json``
(``current_epoch``, ``current_step``). Resuming reliably (around sd-scripts' resume-counter bugs): from
the newest complete ``<name>-<E:06d>-state`` with ``--resume <dir> --initial_epoch <E+1>``.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from likeness.sdscripts import names


def valid_safetensors(path: Path) -> bool:
    """Header parses and the data it announces fits in the file (a file cut short by a kill does not)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                return False
            header = json.loads(handle.read(header_len))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return 8 + header_len + max(ends, default=0) <= size
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def state_epoch(state_dir: str | Path) -> int | None:
    """The epoch a saved state finished, or None when the state is incomplete (killed while saving)."""
    state_dir = Path(state_dir)
    if not all((state_dir / name).is_file() and (state_dir / name).stat().st_size > 0 for name in names.STATE_FILES):
        return None
    try:
        data = json.loads((state_dir / names.TRAIN_STATE_JSON).read_text(encoding="utf-8"))
        epoch = data["current_epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return None
    if not valid_safetensors(state_dir / names.STATE_MODEL):
        return None
    if not all(zipfile.is_zipfile(state_dir / name) for name in names.TORCH_ZIP_FILES):
        return None
    return epoch


def find_resume_state(output_dir: str | Path, output_name: str) -> tuple[Path, int] | None:
    """The newest complete per-epoch state ``<name>-<E:06d>-state`` and its epoch E (skips half-written)."""
    candidates = []
    output = Path(output_dir)
    if output.is_dir():
        for entry in output.iterdir():
            folder_epoch = names.epoch_of_state(output_name, entry.name)
            if folder_epoch is not None and entry.is_dir():
                candidates.append((folder_epoch, entry))
    for folder_epoch, folder in sorted(candidates, reverse=True):
        epoch = state_epoch(folder)
        if epoch is not None and epoch == folder_epoch:
            return folder, epoch
    return None


def saved_epochs(output_dir: str | Path, output_name: str, last_epoch: int) -> list[tuple[int, Path]]:
    """(epoch, LoRA file) of every saved epoch: ``<name>-<E:06d>.safetensors``, and the final file as
    ``last_epoch`` (sd-scripts writes the last epoch under the final name)."""
    output = Path(output_dir)
    epochs = {}
    for path in output.glob(f"{output_name}-*{names.MODEL_SUFFIX}"):
        epoch = names.epoch_of_model(output_name, path.name)
        if epoch is not None:
            epochs[epoch] = path
    final = output / names.final_model(output_name)
    if final.is_file():
        epochs[last_epoch] = final
    return sorted(epochs.items())
