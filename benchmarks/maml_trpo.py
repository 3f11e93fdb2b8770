"""Seconds per MAML-TRPO meta-iteration, split into sampling and optimization.

The paper's size on HalfCheetahVel: 40 tasks x 20 episodes x H = 200, sampled twice per
iteration (pre- and post-adaptation), then the TRPO outer step. Prints one line per iteration
and a summary; ``--json PATH`` writes the figures.

    python benchmarks/maml_trpo.py                 # paper size, 3 iterations, CPU
    python benchmarks/maml_trpo.py --quick         # 10 tasks x 5 episodes, 2 iterations
    python benchmarks/maml_trpo.py --num-adapt-steps 2   # two inner steps
    python benchmarks/maml_trpo.py --device cuda --backend processes --num-workers 2
"""

from __future__ import annotations

import argparse
import json

import torch
from _iteration import build, run_iterations, summarize

from metarl.agents import MAMLTRPO
from metarl.cli import parse_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetahVel")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--meta-batch-size", type=int, default=40)
    parser.add_argument("--episodes-per-task", type=int, default=20)
    parser.add_argument("--num-adapt-steps", type=int, default=1, help="inner steps per task")
    parser.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--hvp-subsample",
        type=float,
        default=1.0,
        help="fraction of the steps for the KL Hessian, every 1/x-th (1: exact)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="inline", choices=["inline", "processes", "ray"])
    parser.add_argument("--num-workers", type=int, default=2, help="processes/ray backends")
    parser.add_argument("--torch-threads", type=int, default=1, help="CPU threads of torch")
    parser.add_argument(
        "--quick",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="10 tasks x 5 episodes, 2 iterations",
    )
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parse_args(parser)
    if args.quick:
        args.meta_batch_size, args.episodes_per_task, args.iterations = 10, 5, 2

    torch.set_num_threads(args.torch_threads)
    family, config, device, agent, tasks_source, sampler, rng = build(
        MAMLTRPO,
        args,
        meta_batch_size=args.meta_batch_size,
        episodes_per_task=args.episodes_per_task,
        num_adapt_steps=args.num_adapt_steps,
        first_order=args.first_order,
        hvp_subsample=args.hvp_subsample,
    )
    print(
        f"MAML-TRPO on {args.env}: {config.meta_batch_size} tasks x {config.episodes_per_task} "
        f"episodes x H={family.horizon}, device={device}, backend={args.backend}"
        + (f" ({args.num_workers} workers)" if args.backend != "inline" else "")
        + f", {args.num_adapt_steps} inner step{'s' if args.num_adapt_steps > 1 else ''}"
        + (", first order" if args.first_order else ", second order")
        + f", hvp_subsample={args.hvp_subsample}, {args.torch_threads} torch thread"
        + ("s" if args.torch_threads > 1 else "")
    )
    try:
        records = run_iterations(
            agent, sampler, tasks_source, config.meta_batch_size, args.iterations, rng
        )
    finally:
        sampler.close()
    summary = {
        "env": args.env,
        "device": str(device),
        "backend": args.backend,
        "num_workers": args.num_workers if args.backend != "inline" else 1,
        "meta_batch_size": config.meta_batch_size,
        "episodes_per_task": config.episodes_per_task,
        "horizon": family.horizon,
        "num_adapt_steps": args.num_adapt_steps,
        "first_order": args.first_order,
        "hvp_subsample": args.hvp_subsample,
        "torch_threads": args.torch_threads,
        **summarize(records),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
