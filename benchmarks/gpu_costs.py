"""What a training costs on each GPU class, by the workflow's own estimate (no GPU needed; nothing is timed).

    .venv/bin/python benchmarks/gpu_costs.py [--dataset results/dataset/images] [--faces 100]

For the demo's training set (the images in --dataset, after `snakemake --cores 2` on the demo) and for a
set of --faces square 1024 px crops, with every `train` default (auto step budget, 1024 px, batch 1,
gradient checkpointing, 3 sample prompts every 2 epochs) it prints steps, hours and, where a price is
known, the cost of each GPU row of resources/gpu_speeds.tsv: the table in the README's "Train on a GPU".

Prices: RunPod on-demand per hour as the price survey at deploybase.ai/articles/runpod-gpu-pricing listed
them in March 2026 (A100 and H100: the PCIe cards). They change often; put yours in train.gpu_hourly_cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from likeness.config import validate_section
from likeness.sdscripts.images import image_sizes
from likeness.train import estimate as est

RUNPOD_ON_DEMAND = {"RTX 3090": 0.39, "RTX 4090": 0.60, "L40S": 1.40, "A100": 2.10, "H100": 3.51}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="results/dataset/images")
    parser.add_argument("--faces", type=int, default=100)
    args = parser.parse_args()
    demo = image_sizes(args.dataset)
    if not demo:
        sys.exit(f"no images in {args.dataset}: run the demo first (snakemake --cores 2)")
    sets = {f"demo ({len(demo)} faces)": demo, f"{args.faces} faces": args.faces}
    gpus = [gpu for gpu in est.known_gpus(est.load_speed_table()) if gpu != "CPU"]
    print("| GPU | " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    for gpu in gpus:
        cells = []
        for images in sets.values():
            cfg = validate_section("train", {"gpu": gpu, "gpu_hourly_cost": RUNPOD_ON_DEMAND.get(gpu, 0.0)}).as_dict()
            estimate = est.estimate(cfg, images)
            cost = f", ${estimate.cost:.2f}" if gpu in RUNPOD_ON_DEMAND else ""
            warn = " (!)" if estimate.exceeds_budget or estimate.warnings else ""
            cells.append(f"{estimate.total_steps} steps, {estimate.total_hours:.2f} h{cost}{warn}")
        price = f" (${RUNPOD_ON_DEMAND[gpu]:.2f}/h)" if gpu in RUNPOD_ON_DEMAND else ""
        print(f"| {gpu}{price} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
