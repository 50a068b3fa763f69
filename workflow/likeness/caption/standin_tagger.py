"""A small offline stand-in for a WD14 tagger, for the tests and the network-free demo.

It has the real v3 taggers' interface: input ``input`` float32 NHWC [N, 448, 448, 3] (BGR, 0..255),
output ``output`` [N, n_tags] sigmoid probabilities, and a ``selected_tags.csv`` of real Danbooru tag
names (4 ratings, general tags, character tags). Its outputs depend on the image (mean colour of each
image quadrant through fixed pseudo-random weights), but its tags MEAN NOTHING: captions made with it
only exercise the workflow. Set ``caption.standin: false`` to use a real tagger.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

import numpy as np

from likeness.atomic import write_if_changed
from likeness.caption.preprocess import DEFAULT_INPUT_SIZE
from likeness.caption.wd14 import CHARACTER_CATEGORY, GENERAL_CATEGORY, MODEL_FILE, RATING_CATEGORY, TAGS_FILE

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17
IR_VERSION = 9  # readable by onnxruntime 1.17 and later
SEED = 20240229

RATING_TAGS = ("general", "sensitive", "questionable", "explicit")
GENERAL_TAGS = (
    "1girl", "1boy", "solo", "smile", "short_hair", "long_hair", "brown_hair", "blonde_hair",
    "black_hair", "grey_hair", "red_hair", "blue_eyes", "brown_eyes", "green_eyes", "glasses", "beard",
    "mustache", "facial_hair", "freckles", "looking_at_viewer", "open_mouth", "closed_mouth", "shirt",
    "white_shirt", "jacket", "hat", "earrings", "necklace", "upper_body", "portrait", "outdoors",
    "indoors", "blurry", "blurry_background", "realistic", "teeth", "closed_eyes", "male_focus",
    "^_^", "o_o", "sky", "tree", "day", "night", "hood",
)  # fmt: skip
CHARACTER_TAGS = ("hatsune_miku", "hakurei_reimu", "kirisame_marisa", "uzumaki_naruto")


def standin_tag_rows(n_tags: int | None = None) -> list[tuple[str, int]]:
    """(name, category) rows: ratings, general, character; padded with ``filler_tag_N`` (category 0)."""
    rows = [(name, RATING_CATEGORY) for name in RATING_TAGS]
    rows += [(name, GENERAL_CATEGORY) for name in GENERAL_TAGS]
    fillers = 0 if n_tags is None else max(0, n_tags - len(rows) - len(CHARACTER_TAGS))
    rows += [(f"filler_tag_{index}", GENERAL_CATEGORY) for index in range(fillers)]
    rows += [(name, CHARACTER_CATEGORY) for name in CHARACTER_TAGS]
    if n_tags is not None and n_tags < len(rows):
        if n_tags < len(RATING_TAGS) + 2:
            raise ValueError(f"n_tags must be at least {len(RATING_TAGS) + 2}")
        keep_general = n_tags - len(RATING_TAGS) - 1
        rows = [*rows[: len(RATING_TAGS) + keep_general], (CHARACTER_TAGS[0], CHARACTER_CATEGORY)]
    return rows


def standin_weights(n_tags: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed weights [12, n_tags] and biases [n_tags]; the first rating ('general') usually wins."""
    rng = np.random.default_rng(SEED)
    weights = rng.normal(0.0, 6.0, size=(12, n_tags)).astype(np.float32)
    bias = rng.normal(-0.5, 1.0, size=n_tags).astype(np.float32)
    weights[:, : len(RATING_TAGS)] *= 0.2  # ratings barely move: a demo face stays 'general'
    bias[0] += 3.0
    return weights, bias


def build_model_bytes(n_tags: int, dynamic_batch: bool = True, input_size: int = DEFAULT_INPUT_SIZE) -> bytes:
    """Serialised ONNX graph: NHWC -> quadrant means -> scale -> MatMul + bias -> Sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if input_size % 2:
        raise ValueError("input_size must be even")
    batch: str | int = "batch_size" if dynamic_batch else 1
    half = input_size // 2
    weights, bias = standin_weights(n_tags)
    nodes = [
        helper.make_node("Transpose", [INPUT_NAME], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["quadrants"], kernel_shape=[half, half], strides=[half, half]),
        helper.make_node("Flatten", ["quadrants"], ["features"], axis=1),
        helper.make_node("Mul", ["features", "inv255"], ["unit"]),
        helper.make_node("Sub", ["unit", "half"], ["centred"]),
        helper.make_node("MatMul", ["centred", "weights"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "inv255"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "likeness_standin_tagger",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, input_size, input_size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, n_tags])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="likeness-standin")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tags_csv_bytes(rows: list[tuple[str, int]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["tag_id", "name", "category", "count"])
    for index, (name, category) in enumerate(rows):
        writer.writerow([100000 + index, name, category, 1000 - index])
    return buffer.getvalue().encode("utf-8")


def build(out_dir: str | os.PathLike[str], n_tags: int | None = None, dynamic_batch: bool = True) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into ``out_dir`` (unchanged files are kept)."""
    rows = standin_tag_rows(n_tags)
    folder = Path(out_dir)
    write_if_changed(folder / MODEL_FILE, build_model_bytes(len(rows), dynamic_batch))
    write_if_changed(folder / TAGS_FILE, tags_csv_bytes(rows))
    return folder


def reference_probabilities(batch: np.ndarray, n_tags: int) -> np.ndarray:
    """What the stand-in graph computes, in numpy (used to check the ONNX model)."""
    size = batch.shape[1]
    half = size // 2
    nchw = batch.transpose(0, 3, 1, 2).astype(np.float64)
    quadrants = nchw.reshape(batch.shape[0], 3, 2, half, 2, half).mean(axis=(3, 5))
    features = quadrants.reshape(batch.shape[0], 12) / 255.0 - 0.5
    weights, bias = standin_weights(n_tags)
    return 1.0 / (1.0 + np.exp(-(features @ weights.astype(np.float64) + bias)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--n-tags", type=int, default=None)
    parser.add_argument("--fixed-batch", action="store_true", help="batch dimension fixed to 1 (like v2)")
    args = parser.parse_args()
    print(build(args.out_dir, args.n_tags, dynamic_batch=not args.fixed_batch))


if __name__ == "__main__":
    main()
