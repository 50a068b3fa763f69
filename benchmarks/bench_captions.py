"""Caption stage speed on this machine: images per second, and the share of wall time spent loading the
model, for 10 and for 200 faces with a cold probability cache (every face goes through the model).

Models: the small stand-in tagger (always); a real tagger with --model-dir (a folder holding model.onnx
and selected_tags.csv, e.g. a downloaded SmilingWolf/wd-vit-tagger-v3); and with --synthetic-large a
random-weight model of ViT-B's size (about 86 M parameters, 340 MB, 784 tokens of width 768 through 12
MLP/projection blocks), which approximates wd-vit-tagger-v3's load time and compute. Its tags mean
nothing. Nothing here is a test: it prints numbers.

    python benchmarks/bench_captions.py [--faces 10 200] [--model-dir DIR] [--synthetic-large]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from likeness.caption import standin_tagger
from likeness.caption.captions import caption_faces
from likeness.config import Section, validate_config


def write_faces(root: Path, count: int) -> tuple[Path, Path]:
    images = root / "results" / "dataset" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(count)
    lines = ["marker_uid\timage\timage_sha256"]
    for index in range(count):
        face = cv2.resize(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), (1024, 1024))
        cv2.imwrite(str(images / f"face{index:04d}.jpg"), face, [cv2.IMWRITE_JPEG_QUALITY, 92])
        lines.append(f"face{index:04d}\tresults/crops/face{index:04d}.jpg\t-")
    manifest = root / "results" / "dataset" / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest, images


def build_synthetic_large(out_dir: Path) -> Path:
    """A random-weight model with ViT-B/16's parameter count and per-token compute at 448 px."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = standin_tagger.standin_tag_rows(10861)  # wd v3 taggers list about 10.8 k tags
    rng = np.random.default_rng(0)
    width, hidden, blocks = 768, 3072, 12
    inits = [numpy_helper.from_array((rng.standard_normal((width, 3, 16, 16)) * 0.02).astype(np.float32), "patch")]
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "patch"], ["patches"], strides=[16, 16]),
        helper.make_node("Reshape", ["patches", "tokens_shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["x0"], perm=[0, 2, 1]),
    ]
    inits.append(numpy_helper.from_array(np.array([0, width, -1], dtype=np.int64), "tokens_shape"))
    current = "x0"
    for block in range(blocks):
        names = [f"b{block}_{part}" for part in ("qkv", "proj", "up", "down")]
        shapes = [(width, 3 * width), (3 * width, width), (width, hidden), (hidden, width)]
        for name, shape in zip(names, shapes, strict=True):
            inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), name))
        nodes += [
            helper.make_node("MatMul", [current, names[0]], [f"{names[0]}_o"]),
            helper.make_node("MatMul", [f"{names[0]}_o", names[1]], [f"{names[1]}_o"]),
            helper.make_node("Add", [current, f"{names[1]}_o"], [f"b{block}_a"]),
            helper.make_node("MatMul", [f"b{block}_a", names[2]], [f"{names[2]}_o"]),
            helper.make_node("Relu", [f"{names[2]}_o"], [f"b{block}_r"]),
            helper.make_node("MatMul", [f"b{block}_r", names[3]], [f"{names[3]}_o"]),
            helper.make_node("Add", [f"b{block}_a", f"{names[3]}_o"], [f"b{block}_out"]),
        ]
        current = f"b{block}_out"
    inits.append(numpy_helper.from_array((rng.standard_normal((width, len(rows))) * 0.02).astype(np.float32), "head"))
    nodes += [
        helper.make_node("ReduceMean", [current], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic_vit_b_size",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 448, 448, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", len(rows)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_dir / "model.onnx"))
    (out_dir / "selected_tags.csv").write_bytes(standin_tagger.tags_csv_bytes(rows))
    return out_dir


def caption_settings(section: dict) -> Section:
    """The caption section as the workflow builds it: the schema's defaults filled in."""
    return validate_config({"person": "bench", "source": {"url": "sqlite:///unused.db"}, "caption": section}).caption


def measure(label: str, section: dict, faces: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        manifest, images = write_faces(root, faces)
        stats_path = root / "stats.json"
        started = time.perf_counter()
        section = {**section, "cache_dir": str(root / "cache"), "batch_size": batch_size, "provider": "cpu"}
        caption_faces(
            manifest,
            images,
            caption_settings(section),
            "ohwx",
            root / "text",
            root / "captions.tsv",
            stats_path,
            log=lambda line: None,
        )
        wall = time.perf_counter() - started
        stats = json.loads(stats_path.read_text())
    rate = stats["model_runs"] / stats["inference_seconds"] if stats["inference_seconds"] else float("nan")
    load = stats["load_seconds"]
    print(
        f"{label:<34} faces {faces:>4}  wall {wall:7.2f} s  stage {faces / wall:7.1f} img/s  "
        f"inference {rate:7.1f} img/s  load {load:6.2f} s = {load / wall:5.1%} of wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-dir", help="folder with a real tagger's model.onnx and selected_tags.csv")
    parser.add_argument("--synthetic-large", action="store_true", help="also a random ViT-B-sized model")
    parser.add_argument("--large-faces", type=int, nargs="+", default=[10], help="face counts for big models")
    args = parser.parse_args()
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, CPU provider, batch size {args.batch_size}")
    models = [("stand-in tagger (test model)", {"standin": True}, args.faces)]
    scratch = tempfile.TemporaryDirectory()
    if args.synthetic_large:
        folder = build_synthetic_large(Path(scratch.name) / "large")
        size = (folder / "model.onnx").stat().st_size / 1e6
        models.append((f"synthetic ViT-B size ({size:.0f} MB)", {"model_dir": str(folder)}, args.large_faces))
    if args.model_dir:
        models.append((f"real tagger {Path(args.model_dir).name}", {"model_dir": args.model_dir}, args.large_faces))
    for label, section, counts in models:
        for faces in counts:
            measure(label, section, faces, args.batch_size)
    scratch.cleanup()


if __name__ == "__main__":
    main()
