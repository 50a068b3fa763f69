"""TEST DOUBLE of kohya sd-scripts' ``sdxl_gen_img.py`` (release v0.10.1). It generates nothing.

It stands in for the real image generation script in tests, where neither a GPU nor an SDXL model exists.
It takes the same command line (every option name of the release's parser is accepted, listed in
resources/kohya/sdxl_gen_img_v0.10.1_options.txt; an unknown one is an error, as argparse makes it),
reads prompts from ``--from_file`` the way the real script does (blank lines and ``#`` lines skipped,
per-prompt options after `` --``: ``--w --h --d --s --l --n``), and writes one PNG per prompt into
``--outdir`` with the real names: ``im_000001.png``, ... with ``--sequential_file_name``, else
``im_<timestamp>_<index:03d>_<seed>.png``.

Its "generated" image for prompt i is training image i (in name order) of the folder recorded in the
LoRA's metadata by tests/doubles/sdxl_train_network.py, resized to --W x --H and warped: the warp is
strongest at the first epoch and weaker at later ones, except that the epoch named by
``double_best_epoch`` (LIKENESS_DOUBLE_BEST_EPOCH at training time) is not warped at all. So a face
identity model finds the best likeness exactly at that epoch. Without --network_weights the warp is the
strongest. Every invocation's argv goes to ``<outdir>/../double_gen_invocations.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
import time
from pathlib import Path

import cv2
import numpy as np

OPTIONS = Path(__file__).resolve().parents[2] / "resources" / "kohya" / "sdxl_gen_img_v0.10.1_options.txt"
# sd-scripts v0.10.1's IMAGE_EXTENSIONS: case-sensitive (a.Jpg is not loaded), hidden names skipped by glob
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"}


def loaded_by_sd_scripts(path: Path) -> bool:
    return path.suffix in IMAGE_SUFFIXES and not path.name.startswith(".")


NARGS = {"--network_module", "--network_weights", "--network_mul", "--network_args", "--guide_image_path"}
NARGS |= {"--textual_inversion_embeddings", "--control_net_image_path", "--control_net_lllite_models"}
NARGS |= {"--control_net_models", "--control_net_multipliers", "--control_net_preps", "--control_net_ratios"}
FLAGS = {
    "--interactive", "--no_preview", "--sequential_file_name", "--use_original_file_name", "--no_half_vae",
    "--iter_same_seed", "--fp16", "--bf16", "--xformers", "--sdpa", "--diffusers_xformers", "--opt_channels_last",
    "--network_show_meta", "--network_merge", "--network_pre_calc", "--highres_fix_save_1st",
    "--highres_fix_latents_upscaling", "--console_log_simple", "--highres_fix_disable_control_net",
}  # fmt: skip
MAX_WARP = 0.4  # beyond this the warped faces stop looking like faces to a detector
MIN_WARP = 0.1


def parser() -> argparse.ArgumentParser:
    names = [line.strip() for line in OPTIONS.read_text().splitlines() if line.startswith("--")]
    result = argparse.ArgumentParser(description="TEST DOUBLE of sdxl_gen_img.py")
    for name in names:
        if name in FLAGS:
            result.add_argument(name, action="store_true")
        elif name in NARGS:
            result.add_argument(name, nargs="*")
        else:
            result.add_argument(name)
    return result


def lora_metadata(path: str) -> dict[str, str]:
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]).get("__metadata__", {})


def warp_level(metadata: dict[str, str]) -> float:
    epoch = int(metadata.get("ss_epoch", "1"))
    epochs = max(1, int(metadata.get("double_epochs", "1")))
    best = metadata.get("double_best_epoch", "")
    if best and int(best) == epoch:
        return 0.0
    if epochs == 1:
        return MIN_WARP
    return MIN_WARP + (MAX_WARP - MIN_WARP) * (epochs - epoch) / (epochs - 1)


def warp(image: np.ndarray, level: float) -> np.ndarray:
    """A smooth sine displacement of ``level`` x 5 % of the side: features move, the face stays a face."""
    if level <= 0:
        return image
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    amplitude = level * width * 0.05
    map_x = xs + amplitude * np.sin(ys / height * 2 * np.pi * 3)
    map_y = ys + amplitude * np.sin(xs / width * 2 * np.pi * 3)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def read_prompts(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and line[0] != "#"]


def prompt_options(line: str, width: int, height: int, seed: int) -> dict:
    parts = line.strip().split(" --")
    options = {"prompt": parts[0], "w": width, "h": height, "seed": seed, "negative": ""}
    for part in parts[1:]:
        for key, pattern in (("w", r"w (\d+)"), ("h", r"h (\d+)"), ("seed", r"d ([\d,]+)")):
            match = re.match(pattern, part, re.IGNORECASE)
            if match:
                options[key] = int(match.group(1).split(",")[0])
        match = re.match(r"n (.+)", part, re.IGNORECASE)
        if match:
            options["negative"] = match.group(1)
    return options


def main() -> None:
    args = parser().parse_args()
    if not args.ckpt:
        print("ERROR: --ckpt is required", file=sys.stderr)
        sys.exit(1)
    outdir = Path(args.outdir or "outputs")
    outdir.mkdir(parents=True, exist_ok=True)
    with (outdir.parent / "double_gen_invocations.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"argv": sys.argv[1:]}) + "\n")
    prompts = read_prompts(args.from_file) if args.from_file else ([args.prompt] if args.prompt else [])
    metadata = lora_metadata(args.network_weights[0]) if args.network_weights else {}
    level = warp_level(metadata) if metadata else MAX_WARP
    folder = Path(metadata.get("double_image_dir", ""))
    sources = sorted(p for p in folder.iterdir() if loaded_by_sd_scripts(p)) if folder.is_dir() else []
    width, height = int(args.W or 1024), int(args.H or 1024)
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
    for index, line in enumerate(prompts):
        options = prompt_options(line, width, height, int(args.seed or 0) + index)
        if sources:
            image = cv2.imread(str(sources[index % len(sources)]), cv2.IMREAD_COLOR)
            image = cv2.resize(image, (options["w"], options["h"]), interpolation=cv2.INTER_AREA)
        else:
            image = np.full((options["h"], options["w"], 3), 128, np.uint8)
        image = warp(image, level)
        if args.sequential_file_name:
            name = f"im_{index + 1:06d}.png"
        else:
            name = f"im_{stamp}_{index:03d}_{options['seed']}.png"
        cv2.imwrite(str(outdir / name), image)
        print(f"double: {name} for {options['prompt'][:60]!r} (warp {level:.2f})", flush=True)


if __name__ == "__main__":
    main()
