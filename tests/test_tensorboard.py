"""likeness.sdscripts.tensorboard against event files written by TensorBoard's own writer, and against
TensorBoard's own readers (EventFileLoader, EventAccumulator)."""

from __future__ import annotations

import random
import struct

import pytest
from fixtures.tb_events import write_events
from likeness.sdscripts import tensorboard as tb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

# What sd-scripts v0.10.1 logs each step with network_train_unet_only (train_network.generate_step_logs).
STEPS = range(1, 31)
SERIES = {
    "loss/current": [(step, 0.2 - step * 0.004) for step in STEPS],
    "loss/average": [(step, 0.2 - step * 0.002) for step in STEPS],
    "lr/unet": [(step, 1e-4 * step / 30) for step in STEPS],
}


def test_masked_crc32c_matches_tensorboards():
    rng = random.Random(7)
    for length in (0, 1, 8, 100, 4096):
        data = bytes(rng.randrange(256) for _ in range(length))
        assert tb.masked_crc32c(data) == masked_crc32c(data)
    assert tb.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


@pytest.mark.parametrize("tensor", [False, True], ids=["simple_value", "tensor"])
def test_scalars_agree_with_tensorboards_readers(tmp_path, tensor):
    path = write_events(tmp_path, SERIES, tensor=tensor)
    ours = tb.read_scalars(path)
    assert {(s.tag, s.step) for s in ours} == {(tag, step) for tag, points in SERIES.items() for step, _ in points}

    loaded = [event for event in EventFileLoader(str(path)).Load() if event.HasField("summary")]
    assert [(s.step, s.wall_time) for s in ours] == [(e.step, e.wall_time) for e in loaded]
    for scalar, event in zip(ours, loaded, strict=True):
        (value,) = event.summary.value
        # the loader migrates simple values to tensors ("data compat"): either way the same float
        official = value.tensor.float_val[0] if value.HasField("tensor") else value.simple_value
        assert (scalar.tag, scalar.value) == (value.tag, official)

    if not tensor:  # the accumulator files new-style scalars under tensors: compare the simple values
        accumulator = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
        accumulator.Reload()
        series = tb.scalar_series([path])
        assert sorted(accumulator.Tags()["scalars"]) == sorted(series)
        for tag, points in series.items():
            assert points == [(event.step, event.value) for event in accumulator.Scalars(tag)]
            # float32 on the wire: equal to what was written after rounding to float32
            assert [v for _, v in points] == pytest.approx([v for _, v in SERIES[tag]], rel=1e-6)


def test_a_resumed_launch_that_numbers_from_1_again_comes_after_the_first(tmp_path):
    """What sd-scripts v0.10.1 wrote in a real resume from the epoch-1 state (tests/test_sdscripts_real.py):
    the second launch's folder logs epoch 2's steps as 1 and 2 again."""
    write_events(tmp_path / "logs" / "20260101000000" / "network_train", {"loss/current": [(1, 0.5), (2, 0.4)]})
    write_events(tmp_path / "logs" / "20260101010000" / "network_train", {"loss/current": [(1, 0.3), (2, 0.2)]})
    points = tb.scalar_series(tb.event_files(tmp_path))["loss/current"]
    assert [step for step, _ in points] == [1, 2, 3, 4]
    assert [value for _, value in points] == pytest.approx([0.5, 0.4, 0.3, 0.2])


def test_a_resumed_launch_overwrites_the_steps_it_repeats(tmp_path):
    first = write_events(
        tmp_path / "logs" / "20260101000000" / "network_train", {"loss/current": [(1, 0.5), (2, 0.4), (3, 0.3)]}
    )
    second = write_events(
        tmp_path / "logs" / "20260101010000" / "network_train", {"loss/current": [(3, 0.25), (4, 0.2)]}
    )
    files = tb.event_files(tmp_path)
    assert files == [first, second]  # launch order: the time-stamped folders sort
    points = tb.scalar_series(files)["loss/current"]
    assert [step for step, _ in points] == [1, 2, 3, 4]
    assert [value for _, value in points] == pytest.approx([0.5, 0.4, 0.25, 0.2])


def test_a_record_cut_short_ends_the_file_quietly_a_bad_checksum_raises(tmp_path):
    path = write_events(tmp_path, {"loss/current": [(1, 0.5), (2, 0.4)]})
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # the writer was killed in the middle of the last record
    assert [s.step for s in tb.read_scalars(path)] == [1]
    damaged = bytearray(data)
    damaged[-6] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(tb.EventFileError, match="data checksum"):
        tb.read_scalars(path)
    damaged = bytearray(data)
    damaged[_last_record_start(data)] ^= 0x01  # the last record's length
    path.write_bytes(bytes(damaged))
    with pytest.raises(tb.EventFileError, match="length checksum"):
        tb.read_scalars(path)


def _last_record_start(data: bytes) -> int:
    position = last = 0
    while position < len(data):
        last = position
        (length,) = struct.unpack("<Q", data[position : position + 8])
        position += 12 + length + 4
    return last


def test_learning_rate_tags_leave_out_the_d_adaptation_products():
    series = {"loss/current": [], "lr/textencoder": [], "lr/unet": [], "lr/d*lr/unet": [], "lr/group2": []}
    assert tb.learning_rate_tags(series) == ["lr/textencoder", "lr/unet", "lr/group2"]


def test_no_event_files_in_a_missing_or_empty_folder(tmp_path):
    assert tb.event_files(tmp_path / "missing") == []
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.out.tfevents.not-a-folder").mkdir()
    assert tb.event_files(tmp_path / "run") == []
