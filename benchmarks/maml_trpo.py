"""Seconds per MAML-TRPO meta-iteration, split into sampling and optimization.

Default size: pytorch-maml-rl's on HalfCheetahVel, 40 tasks x 20 episodes x H = 200, sampled
twice per iteration (pre- and post-adaptation), then the TRPO outer step. ``--preset paper``:
Finn et al.'s (100, 100) ReLU policy and the paper's meta-batch and episodes for the family.
Prints one line per iteration and a summary; ``--json PATH`` writes the figures.

    python benchmarks/maml_trpo.py                 # default preset, 3 iterations, CPU
    python benchmarks/maml_trpo.py --preset paper  # the paper's policy and batch
    python benchmarks/maml_trpo.py --quick         # 10 tasks x 5 episodes, 2 iterations
    python benchmarks/maml_trpo.py --num-adapt-steps 2   # two inner steps
    python benchmarks/maml_trpo.py --device cuda --backend processes --num-workers 2
    python benchmarks/maml_trpo.py --device cuda --backend warp   # physics on the GPU too
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

import torch
from _iteration import build, run_iterations, summarize

from metarl.agents import MAMLTRPO
from metarl.cli import parse_args


def describe(args: argparse.Namespace, config: Any, horizon: int, device: torch.device) -> str:
    """The benchmark's setting in one line."""
    steps = f"{args.num_adapt_steps} inner step{'s' if args.num_adapt_steps > 1 else ''}"
    return (
        f"MAML-TRPO ({args.preset} preset: {config.hidden_sizes} {config.activation}) on "
        f"{args.env}: {config.meta_batch_size} tasks x {config.episodes_per_task} episodes x "
        f"H={horizon}, device={device}, backend={args.backend}"
        + (f" ({args.num_workers} workers)" if args.backend in ("processes", "ray") else "")
        + f", {steps}, {'first' if args.first_order else 'second'} order, "
        + f"{args.torch_threads} torch thread{'s' if args.torch_threads > 1 else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetahVel")
    parser.add_argument("--preset", default="default", choices=MAMLTRPO.PRESET_NAMES)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--meta-batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--episodes-per-task", type=int, default=None, help="default: the preset's")
    parser.add_argument("--num-adapt-steps", type=int, default=1, help="inner steps per task")
    parser.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backend", default="inline", choices=["inline", "processes", "ray", "warp"]
    )
    parser.add_argument("--num-workers", type=int, default=2, help="processes/ray backends")
    parser.add_argument("--torch-threads", type=int, default=1, help="CPU threads of torch")
    quick = "10 tasks x 5 episodes, 2 iterations"
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False, help=quick)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parse_args(parser)
    if args.quick:
        args.meta_batch_size, args.episodes_per_task, args.iterations = 10, 5, 2
    preset = MAMLTRPO.preset(args.preset, args.env)

    torch.set_num_threads(args.torch_threads)
    family, config, device, agent, tasks_source, sampler, rng = build(
        MAMLTRPO,
        args,
        **{
            **asdict(preset),
            "meta_batch_size": args.meta_batch_size or preset.meta_batch_size,
            "episodes_per_task": args.episodes_per_task or preset.episodes_per_task,
            "num_adapt_steps": args.num_adapt_steps,
            "first_order": args.first_order,
        },
    )
    print(describe(args, config, family.horizon, device))
    try:
        records = run_iterations(
            agent, sampler, tasks_source, config.meta_batch_size, args.iterations, rng
        )
    finally:
        sampler.close()
    summary = {
        "env": args.env,
        "preset": args.preset,
        "device": str(device),
        "backend": args.backend,
        "num_workers": args.num_workers if args.backend in ("processes", "ray") else 1,
        "meta_batch_size": config.meta_batch_size,
        "episodes_per_task": config.episodes_per_task,
        "horizon": family.horizon,
        "num_adapt_steps": args.num_adapt_steps,
        "first_order": args.first_order,
        "torch_threads": args.torch_threads,
        **summarize(records),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
