"""Seconds per RL^2-PPO meta-iteration, split into sampling and optimization.

Default size: the ``default`` preset (garage's HalfCheetah example) on HalfCheetahVel (H = 200):
10 tasks x 1 trial of 4 episodes (8,000 env steps), 10 PPO epochs over whole trials. Prints one
line per iteration; ``--json PATH`` writes the figures.

    python benchmarks/rl2_ppo.py                  # 10 tasks x 4 episodes, 3 iterations
    python benchmarks/rl2_ppo.py --quick          # 10 tasks x 2 episodes, 2 epochs, 1 iteration
    python benchmarks/rl2_ppo.py --device cuda

A run's adaptation curve (episode 1..K of a trial on held-out tasks) is ``metarl eval RUN``.
"""

from __future__ import annotations

import argparse
import json

import torch
from _iteration import build, run_iterations, summarize

from metarl.agents import RL2PPO
from metarl.cli import parse_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetahVel")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--meta-batch-size", type=int, default=10)
    parser.add_argument("--episodes-per-trial", type=int, default=4)
    parser.add_argument("--update-epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="inline", choices=["inline", "processes", "ray"])
    parser.add_argument("--num-workers", type=int, default=2, help="processes/ray backends")
    parser.add_argument(
        "--quick",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="2 episodes, 2 epochs, 1 iteration",
    )
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parse_args(parser)
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    if args.quick:
        args.episodes_per_trial, args.update_epochs, args.iterations = 2, 2, 1

    family, config, device, agent, tasks_source, sampler, rng = build(
        RL2PPO,
        args,
        meta_batch_size=args.meta_batch_size,
        episodes_per_trial=args.episodes_per_trial,
        update_epochs=args.update_epochs,
    )
    print(
        f"RL2-PPO on {args.env}: {config.meta_batch_size} tasks x {config.trials_per_task} "
        f"trial x {config.episodes_per_trial} episodes x H={family.horizon}, "
        f"{config.cell.upper()} {config.hidden_size}, {config.update_epochs} epochs x "
        f"{config.num_minibatches} minibatches, device={device}, backend={args.backend}, "
        f"torch threads={torch.get_num_threads()}"
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
        "meta_batch_size": config.meta_batch_size,
        "episodes_per_trial": config.episodes_per_trial,
        "horizon": family.horizon,
        "cell": config.cell,
        "hidden_size": config.hidden_size,
        "update_epochs": config.update_epochs,
        "num_minibatches": config.num_minibatches,
        **summarize(records),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
