"""TEST DOUBLE of kohya sd-scripts' ``sdxl_train_network.py`` (release v0.10.1). It trains nothing.

It stands in for the real script in tests, where neither a GPU nor sd-scripts nor an SDXL model exists.
It takes the same command line (``--config_file``, ``--dataset_config``, ``--resume``, ``--initial_epoch``
and any further options), reads the same two TOML files, rejects dataset.toml keys the real schema
rejects (checked against resources/kohya/sdxl_train_network_v0.10.1_options.tsv), counts steps the way
the real script does for square crops, prints tqdm-like progress lines, and writes the same files:
per epoch ``<name>-<E:06d>.safetensors`` and (with save_state) ``<name>-<E:06d>-state/`` holding
train_state.json, model.safetensors, optimizer.bin, scheduler.bin and random_states_0.pkl, written one
after another and not atomically (as accelerate does), so a SIGKILL while saving leaves a half-written
state; at the end ``<name>-state/`` and ``<name>.safetensors``; samples under ``<output_dir>/sample/``
(training images warped by epoch, as tests/doubles/sdxl_gen_img.py renders headshots); with
``logging_dir`` set, TensorBoard event files as sd-scripts' accelerate tracker writes them (see EventLog).

Knobs (environment): LIKENESS_DOUBLE_STEP_SECONDS (sleep per step), LIKENESS_DOUBLE_SAVE_SECONDS (sleep
between the files of a state), LIKENESS_DOUBLE_BEST_EPOCH (the epoch whose LoRA the generation double
renders most faithfully; recorded in each LoRA's metadata with the training images' folder, which is
what tests/doubles/sdxl_gen_img.py builds its "generated" images from), LIKENESS_DOUBLE_OPTIONS_TSV (the
option list, for a copy outside tests/). Records for the tests: every invocation's argv in
``<output_dir>/double_invocations.jsonl`` and every step it ran in ``<output_dir>/double_steps.jsonl``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import struct
import sys
import time
import tomllib
import zipfile
import zlib
from pathlib import Path

# A copy of the double installed elsewhere (the trainer-install tests clone it) is told where the list is.
OPTIONS_TSV = Path(
    os.environ.get("LIKENESS_DOUBLE_OPTIONS_TSV")
    or Path(__file__).resolve().parents[2] / "resources" / "kohya" / "sdxl_train_network_v0.10.1_options.tsv"
)
# sd-scripts v0.10.1's IMAGE_EXTENSIONS: case-sensitive (a.Jpg is not loaded), hidden names skipped by glob
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"}


def loaded_by_sd_scripts(path: Path) -> bool:
    return path.suffix in IMAGE_SUFFIXES and not path.name.startswith(".")


STATE_FILES = (
    "train_state.json",
    "model.safetensors",
    "optimizer.bin",
    "scheduler.bin",
    "random_states_0.pkl",
)


def fail(message: str) -> None:
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def option_scopes() -> dict[str, set[str]]:
    lines = [line for line in OPTIONS_TSV.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]
    scopes: dict[str, set[str]] = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        scopes.setdefault(row["scope"], set()).add(row["name"])
    return scopes


def check_dataset_keys(doc: dict, scopes: dict[str, set[str]]) -> None:
    """The real script's voluptuous schema raises on unknown keys at any level; so does the double."""
    for key in doc:
        if key not in ("general", "datasets"):
            fail(f"dataset config: extra keys not allowed @ data['{key}']")
    for key in doc.get("general", {}):
        if key not in scopes["dataset.general"]:
            fail(f"dataset config: extra keys not allowed @ data['general']['{key}']")
    for dataset in doc.get("datasets", []):
        for key in dataset:
            if key not in scopes["dataset.datasets"]:
                fail(f"dataset config: extra keys not allowed @ data['datasets'][0]['{key}']")
        for subset in dataset.get("subsets", []):
            if "image_dir" not in subset:
                fail("dataset config: required key not provided @ data['datasets'][0]['subsets'][0]['image_dir']")
            for key in subset:
                if key not in scopes["dataset.subsets"]:
                    fail(f"dataset config: extra keys not allowed @ data['datasets'][0]['subsets'][0]['{key}']")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or a JPEG SOF marker, for an environment without OpenCV."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    pos = 2
    while data.startswith(b"\xff\xd8") and pos + 9 < len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def image_size(path: Path) -> tuple[int, int]:
    try:
        import cv2
    except ImportError:  # a freshly installed environment (the trainer-install tests) has no OpenCV
        size = _header_size(path.read_bytes()[: 256 * 1024])
        if size is None:
            fail(f"cannot read image {path}")
        return size
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        fail(f"cannot read image {path}")
    return int(image.shape[1]), int(image.shape[0])


def count_steps_per_epoch(doc: dict, train_args: dict) -> int:
    """Images x repeats, regularisation balance, a batch list per bucket, accumulation (square crops only)."""
    general = doc.get("general", {})
    steps_per_epoch_batches = 0
    for dataset in doc["datasets"]:
        level = {**general, **{k: v for k, v in dataset.items() if k != "subsets"}}
        resolution = level.get("resolution", 1024)
        resolution = resolution if isinstance(resolution, int) else resolution[0]
        reso_steps = level.get("bucket_reso_steps", 64)
        batch = level.get("batch_size", train_args.get("train_batch_size", 1))
        buckets: dict[int, int] = {}
        train_total = 0
        reg_images: list[int] = []
        for subset in dataset["subsets"]:
            settings = {**level, **subset}
            images = sorted(p for p in Path(subset["image_dir"]).iterdir() if loaded_by_sd_scripts(p))
            for path in images:
                width, height = image_size(path)
                if width != height:
                    fail("the test double only supports square images")
                side = min(width, resolution)  # no upscaling, never above the resolution
                side -= side % reso_steps
                if settings.get("is_reg", False):
                    reg_images.append(side)
                else:
                    buckets[side] = buckets.get(side, 0) + settings.get("num_repeats", 1)
                    train_total += settings.get("num_repeats", 1)
        reg_used = 0
        while reg_images and reg_used < train_total:  # one repeat per reg image and round until balanced
            for side in reg_images:
                buckets[side] = buckets.get(side, 0) + 1
                reg_used += 1
                if reg_used >= train_total:
                    break
        steps_per_epoch_batches += sum(math.ceil(count / batch) for count in buckets.values())
    accumulation = train_args.get("gradient_accumulation_steps", 1)
    return math.ceil(steps_per_epoch_batches / accumulation)


def write_safetensors(path: Path, epoch: int, metadata: dict | None = None) -> None:
    """A real (tiny) safetensors file: 8-byte header length, JSON header, data."""
    data = struct.pack("<16f", *([float(epoch)] * 16))
    header = {
        "lora_unet_double.lora_down.weight": {
            "dtype": "F32",
            "shape": [4, 4],
            "data_offsets": [0, len(data)],
        },
        "__metadata__": {"ss_epoch": str(epoch), "written_by": "test double", **(metadata or {})},
    }
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)) + header_bytes + data)


def write_torch_zip(path: Path, payload: dict) -> None:
    """torch.save writes a zip container; a kill before its end leaves no central directory."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", json.dumps(payload))


def write_state(state_dir: Path, epoch: int, step: int, pause: float = 0.0) -> None:
    """Same files and order as sd-scripts' save hook + accelerate.save_state; deliberately not atomic."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "train_state.json").write_text(json.dumps({"current_epoch": epoch, "current_step": step}))
    time.sleep(pause)
    write_safetensors(state_dir / "model.safetensors", epoch)
    time.sleep(pause)
    write_torch_zip(state_dir / "optimizer.bin", {"epoch": epoch})
    time.sleep(pause)
    write_torch_zip(state_dir / "scheduler.bin", {"epoch": epoch})
    time.sleep(pause)
    write_torch_zip(state_dir / "random_states_0.pkl", {"epoch": epoch})


def write_png(path: Path) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = zlib.compress(b"\x00\x80\x80\x80")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def write_sample(path: Path, prompt: str, index: int, metadata: dict) -> None:
    """A sample as the generation double renders a headshot: training image ``index`` at the prompt's
    --w/--h, warped as much as this epoch's LoRA would be (tests/doubles/sdxl_gen_img.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import cv2
        from sdxl_gen_img import prompt_options, warp, warp_level
    except ImportError:  # an environment without OpenCV (the trainer install's own venv): a plain sample
        write_png(path)
        return

    folder = Path(metadata.get("double_image_dir", ""))
    sources = sorted(p for p in folder.iterdir() if loaded_by_sd_scripts(p)) if folder.is_dir() else []
    if not sources:
        write_png(path)
        return
    options = prompt_options(prompt, 256, 256, index)
    image = cv2.imread(str(sources[index % len(sources)]), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (options["w"], options["h"]), interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), warp(image, warp_level(metadata)))


def progress_line(done: int, total: int, started: float) -> str:
    elapsed = max(time.monotonic() - started, 1e-6)
    per_step = elapsed / max(done, 1)
    left = per_step * (total - done)
    rate = f"{per_step:.2f}s/it" if per_step >= 1 else f"{1 / per_step:.2f}it/s"
    bar = "#" * (10 * done // total)

    def clock(seconds: float) -> str:
        return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"

    return (
        f"\rsteps: {100 * done // total:3d}%|{bar:<10}| {done}/{total} "
        f"[{clock(elapsed)}<{clock(left)}, {rate}, avr_loss=0.1]"
    )


class EventLog:
    """sd-scripts' TensorBoard logging: ``<logging_dir>/<log_prefix><YYYYmmddHHMMSS>/network_train/`` per
    launch, and each step ``loss/current``, ``loss/average`` and the learning rate (``lr/unet``, with
    ``lr/textencoder`` when the text encoders train) at step = global step, as train_network.py v0.10.1
    logs them. Written with TensorBoard's own writer (torch.utils.tensorboard's) where it is importable,
    else not at all. The losses are made up: a falling curve that depends on the step alone."""

    def __init__(self, train_args: dict) -> None:
        self.writer = None
        self.losses: list[float] = []
        self.learning_rate = float(train_args.get("unet_lr") or train_args.get("learning_rate") or 1e-4)
        self.text_encoder = not train_args.get("network_train_unet_only")
        if not train_args.get("logging_dir"):
            return
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            return
        launch = f"{train_args.get('log_prefix') or ''}{time.strftime('%Y%m%d%H%M%S')}"
        folder = Path(train_args["logging_dir"]) / launch / "network_train"
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(folder))
        self.event, self.summary = event_pb2.Event, summary_pb2.Summary

    def step(self, global_step: int) -> None:
        if self.writer is None:
            return
        loss = 0.08 + 0.04 / math.sqrt(global_step)
        self.losses = [*self.losses[-9:], loss]  # sd-scripts' moving average over the last steps
        logs = {"loss/current": loss, "loss/average": sum(self.losses) / len(self.losses)}
        if self.text_encoder:
            logs["lr/textencoder"] = self.learning_rate
        logs["lr/unet"] = self.learning_rate
        for tag, value in logs.items():  # accelerate's tracker: one add_scalar (one event) per value
            summary = self.summary(value=[self.summary.Value(tag=tag, simple_value=value)])
            self.writer.add_event(self.event(wall_time=time.time(), step=global_step, summary=summary))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="TEST DOUBLE of sdxl_train_network.py")
    parser.add_argument("--config_file")
    parser.add_argument("--dataset_config")
    parser.add_argument("--resume")
    parser.add_argument("--initial_epoch", type=int)
    parser.add_argument("--initial_step", type=int)
    args, extra = parser.parse_known_args()
    if not args.config_file or not args.dataset_config:
        fail("the test double needs --config_file and --dataset_config")
    config_path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
    with open(config_path, "rb") as handle:
        train_doc = tomllib.load(handle)
    train_args: dict = {}
    for key, value in train_doc.items():  # sd-scripts flattens the tables of the config file
        train_args.update(value if isinstance(value, dict) else {key: value})
    with open(args.dataset_config, "rb") as handle:
        dataset_doc = tomllib.load(handle)
    scopes = option_scopes()
    check_dataset_keys(dataset_doc, scopes)
    unknown = sorted(set(train_args) - scopes["train"])
    if unknown:
        print(f"WARNING (test double): sd-scripts would silently ignore {unknown}", flush=True)
    if train_args.get("cache_text_encoder_outputs") and not train_args.get("network_train_unet_only"):
        fail("network for Text Encoder cannot be trained with caching Text Encoder outputs")

    output_dir = Path(train_args["output_dir"])
    name = train_args.get("output_name") or "last"
    output_dir.mkdir(parents=True, exist_ok=True)
    append_jsonl(output_dir / "double_invocations.jsonl", {"argv": sys.argv[1:], "extra": extra, "pid": os.getpid()})

    step_seconds = float(os.environ.get("LIKENESS_DOUBLE_STEP_SECONDS", "0"))
    save_pause = float(os.environ.get("LIKENESS_DOUBLE_SAVE_SECONDS", "0"))
    steps_per_epoch = count_steps_per_epoch(dataset_doc, train_args)
    # as train_network.py: max_train_epochs, when set, overrides max_train_steps (default 1600); the epochs
    # then follow from the steps and the loop stops at max_train_steps
    if train_args.get("max_train_epochs"):
        epochs = int(train_args["max_train_epochs"])
        total = epochs * steps_per_epoch
    else:
        total = int(train_args.get("max_train_steps") or 1600)
        epochs = math.ceil(total / steps_per_epoch)
    print(f"override steps. steps for {epochs} epochs is / 指定エポックまでのステップ数: {total}", flush=True)

    epoch_to_start = 0
    if args.resume:
        state_dir = Path(args.resume)
        missing = [f for f in STATE_FILES if not (state_dir / f).is_file()]
        if missing:
            fail(f"cannot resume from {state_dir}: missing {missing}")
        state = json.loads((state_dir / "train_state.json").read_text())
        print(f"load train state from {state_dir / 'train_state.json'}: {state}", flush=True)
        if args.initial_epoch is None:
            epoch_to_start = state["current_step"] // steps_per_epoch
    if args.initial_epoch is not None:
        epoch_to_start = args.initial_epoch - 1

    save_every = train_args.get("save_every_n_epochs")
    sample_every = train_args.get("sample_every_n_epochs")
    prompts = []
    if train_args.get("sample_prompts"):
        prompts = [p for p in Path(train_args["sample_prompts"]).read_text().splitlines() if p.strip()]
    image_dirs = [
        str(Path(sub["image_dir"]).resolve())
        for dataset in dataset_doc["datasets"]
        for sub in dataset.get("subsets", [])
        if not sub.get("is_reg", False)
    ]
    lora_meta = {
        "double_image_dir": image_dirs[0] if image_dirs else "",
        "double_epochs": str(epochs),
        "double_best_epoch": os.environ.get("LIKENESS_DOUBLE_BEST_EPOCH", ""),
    }
    started = time.monotonic()
    done = 0
    events = EventLog(train_args)
    for epoch in range(epoch_to_start + 1, epochs + 1):
        print(f"\nepoch {epoch}/{epochs}\n", flush=True)
        for step in range(steps_per_epoch):
            if (epoch - 1) * steps_per_epoch + step >= total:
                break
            time.sleep(step_seconds)
            done += 1
            append_jsonl(output_dir / "double_steps.jsonl", {"epoch": epoch, "step": step, "pid": os.getpid()})
            events.step((epoch - 1) * steps_per_epoch + step + 1)
            sys.stdout.write(progress_line(done, total, started))
            sys.stdout.flush()
        if save_every and epoch % save_every == 0 and epoch < epochs:
            print(f"\nsaving checkpoint: {output_dir / f'{name}-{epoch:06d}.safetensors'}", flush=True)
            write_safetensors(output_dir / f"{name}-{epoch:06d}.safetensors", epoch, lora_meta)
            if train_args.get("save_state"):
                write_state(output_dir / f"{name}-{epoch:06d}-state", epoch, epoch * steps_per_epoch, save_pause)
        if sample_every and epoch % sample_every == 0:
            for i, prompt in enumerate(prompts):
                path = output_dir / "sample" / f"{name}_e{epoch:06d}_{i:02d}_20260101000000.png"
                write_sample(path, prompt, i, {**lora_meta, "ss_epoch": str(epoch)})
    if train_args.get("save_state") or train_args.get("save_state_on_train_end"):
        write_state(output_dir / f"{name}-state", epochs, total, save_pause)
    write_safetensors(output_dir / f"{name}.safetensors", epochs, lora_meta)
    events.close()
    print("\nmodel saved.", flush=True)


if __name__ == "__main__":
    main()
