"""TensorBoard event files written by TensorBoard's own writer, as sd-scripts' tracker writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def scalar_value(tag: str, value: float, tensor: bool = False) -> summary_pb2.Summary.Value:
    """A scalar the way torch.utils.tensorboard writes it: simple_value, or a float tensor ("new style")."""
    if tensor:
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])
        return summary_pb2.Summary.Value(tag=tag, tensor=proto)
    return summary_pb2.Summary.Value(tag=tag, simple_value=value)


def write_events(
    folder: Path, series: Mapping[str, Sequence[tuple[int, float]]], tensor: bool = False, wall_time: float = 1.7e9
) -> Path:
    """One event file in ``folder`` with every (step, value) of every tag, one event per step and tag."""
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob("events.out.tfevents.*"))
    writer = EventFileWriter(str(folder))
    for tag, points in series.items():
        for step, value in points:
            summary = summary_pb2.Summary(value=[scalar_value(tag, value, tensor)])
            writer.add_event(event_pb2.Event(wall_time=wall_time + step, step=step, summary=summary))
    writer.close()
    (path,) = set(folder.glob("events.out.tfevents.*")) - before
    return path
