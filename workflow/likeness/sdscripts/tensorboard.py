"""Read the scalars sd-scripts logs to TensorBoard event files, without TensorFlow or TensorBoard.

sd-scripts v0.10.1 (train_network.py, ``generate_step_logs``) logs through accelerate's TensorBoard
tracker (torch.utils.tensorboard) once per optimizer step at ``step = global_step``:
``loss/current`` (this step's loss), ``loss/average`` (the moving average the progress bar shows as
avr_loss) and one learning rate per parameter group, ``lr/unet`` (``lr/textencoder`` too when the text
encoders train, ``lr/group<i>`` with more groups). The files live under its ``logging_dir``, one
``<prefix><timestamp>/network_train/`` folder per launch, so a resumed run adds a folder.

An event file is a TFRecord file: each record is ``uint64 length``, ``uint32 masked CRC32C of the
length``, the bytes of one ``Event`` protobuf, ``uint32 masked CRC32C of the bytes`` (little endian).
Only the protobuf fields on the way to a scalar are decoded: Event.step (2), Event.wall_time (1),
Event.summary (5) -> Summary.value (1) -> Value.tag (1) with Value.simple_value (2) or
Value.tensor (8) -> TensorProto float_val (5) / double_val (6) / tensor_content (4) by dtype (1).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOSS_TAG = "loss/current"
AVERAGE_LOSS_TAG = "loss/average"
LEARNING_RATE_PREFIX = "lr/"
EVENT_FILE_GLOB = "events.out.tfevents.*"

_CRC_MASK_DELTA = 0xA282EAD8
_DT_FLOAT, _DT_DOUBLE = 1, 2  # tensorflow.DataType


class EventFileError(ValueError):
    """An event file whose framing or checksums are wrong (not a file cut short while being written)."""


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant (so CRCs of CRCs differ)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The records of a TFRecord file in order; a record cut short at the end (a live or killed writer)
    ends the file quietly, a wrong checksum raises EventFileError."""
    data = Path(path).read_bytes()
    position = 0
    while position + 12 <= len(data):
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[position + 8 : position + 12])
        if masked_crc32c(header) != length_crc:
            raise EventFileError(f"{path}: bad length checksum at byte {position}")
        end = position + 12 + length + 4
        if end > len(data):
            return
        payload = data[position + 12 : position + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[end - 4 : end])
        if masked_crc32c(payload) != payload_crc:
            raise EventFileError(f"{path}: bad data checksum at byte {position}")
        yield payload
        position = end


# --- protobuf wire format ------------------------------------------------------------------------------


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise EventFileError("protobuf varint runs past the end of its message")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7


def _fields(message: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field: an int for varints and fixed-width numbers
    (their raw little-endian bits), bytes for length-delimited fields."""
    position = 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(message, position)
        elif wire == 1:
            (value,) = struct.unpack_from("<Q", message, position)
            position += 8
        elif wire == 5:
            (value,) = struct.unpack_from("<I", message, position)
            position += 4
        elif wire == 2:
            length, position = _varint(message, position)
            value = message[position : position + length]
            position += length
        else:
            raise EventFileError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _float32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _float64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _tensor_scalar(tensor: bytes) -> float | None:
    """The first value of a float or double TensorProto (a scalar summary written "new style")."""
    dtype, values, content = 0, [], b""
    for number, wire, value in _fields(tensor):
        if number == 1 and wire == 0:
            dtype = int(value)  # type: ignore[arg-type]
        elif number == 4 and wire == 2:
            content = bytes(value)  # type: ignore[arg-type]
        elif number == 5 and wire == 5:
            values.append(_float32(int(value)))  # type: ignore[arg-type]
        elif number == 5 and wire == 2:
            values += [v for (v,) in struct.iter_unpack("<f", value)]  # type: ignore[arg-type]
        elif number == 6 and wire == 1:
            values.append(_float64(int(value)))  # type: ignore[arg-type]
        elif number == 6 and wire == 2:
            values += [v for (v,) in struct.iter_unpack("<d", value)]  # type: ignore[arg-type]
    if values:
        return values[0]
    if dtype == _DT_FLOAT and len(content) >= 4:
        return struct.unpack_from("<f", content)[0]
    if dtype == _DT_DOUBLE and len(content) >= 8:
        return struct.unpack_from("<d", content)[0]
    return None


@dataclass(frozen=True)
class Scalar:
    tag: str
    step: int
    value: float
    wall_time: float


def _summary_values(summary: bytes) -> Iterator[tuple[str, float]]:
    for number, wire, value in _fields(summary):
        if number != 1 or wire != 2:
            continue
        tag, scalar = "", None
        for field, kind, item in _fields(value):  # type: ignore[arg-type]
            if field == 1 and kind == 2:
                tag = bytes(item).decode("utf-8", errors="replace")  # type: ignore[arg-type]
            elif field == 2 and kind == 5:
                scalar = _float32(int(item))  # type: ignore[arg-type]
            elif field == 8 and kind == 2:
                scalar = _tensor_scalar(item)  # type: ignore[arg-type]
        if tag and scalar is not None:
            yield tag, scalar


def event_scalars(event: bytes) -> list[Scalar]:
    """The scalar values one Event record carries (none for file-version or graph events)."""
    step, wall_time, summaries = 0, 0.0, []
    for number, wire, value in _fields(event):
        if number == 1 and wire == 1:
            wall_time = _float64(int(value))  # type: ignore[arg-type]
        elif number == 2 and wire == 0:
            step = int(value)  # type: ignore[arg-type]
            step = step - (1 << 64) if step >= 1 << 63 else step  # int64 on the wire
        elif number == 5 and wire == 2:
            summaries.append(value)
    return [Scalar(tag, step, scalar, wall_time) for summary in summaries for tag, scalar in _summary_values(summary)]  # type: ignore[arg-type]


def read_scalars(path: str | os.PathLike[str]) -> list[Scalar]:
    """Every scalar in one event file, in the order written."""
    return [scalar for record in read_records(path) for scalar in event_scalars(record)]


def event_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The event files anywhere under ``folder`` (a run folder or its logging_dir), oldest launch first.

    sd-scripts names each launch's folder with a time stamp and the writer names its file with the
    start time: path order is launch order.
    """
    root = Path(folder)
    return sorted(path for path in root.rglob(EVENT_FILE_GLOB) if path.is_file()) if root.is_dir() else []


def scalar_series(files: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per tag across ``files`` (launch order), by step.

    sd-scripts v0.10.1 numbers a resumed launch's steps from 1 again (seen in a real resume from an epoch
    state): a launch that starts again at or below the first launch's first step is placed after the
    steps logged so far. A launch that goes on numbering overwrites any step it repeats (the steps a
    killed launch logged after its last saved state are done again).
    """
    by_tag: dict[str, dict[int, float]] = {}
    first_step: int | None = None
    last_step = 0
    for path in files:
        scalars = read_scalars(path)
        if not scalars:
            continue
        start = min(scalar.step for scalar in scalars)
        offset = last_step - start + 1 if first_step is not None and start <= first_step else 0
        for scalar in scalars:
            by_tag.setdefault(scalar.tag, {})[scalar.step + offset] = scalar.value
        first_step = start if first_step is None else first_step
        last_step = max(last_step, *(scalar.step + offset for scalar in scalars))
    return {tag: sorted(values.items()) for tag, values in sorted(by_tag.items())}


def learning_rate_tags(series: dict[str, list[tuple[int, float]]]) -> list[str]:
    """The learning-rate tags, without sd-scripts' D-Adaptation/Prodigy products (``lr/d*lr/...``)."""
    return [tag for tag in series if tag.startswith(LEARNING_RATE_PREFIX) and not tag.startswith("lr/d*lr")]
