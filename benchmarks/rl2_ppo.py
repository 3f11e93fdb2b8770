"""Seconds per RL^2-PPO meta-iteration, split into sampling and optimization.

Default size: the ``default`` preset (garage's HalfCheetah example) on HalfCheetahVel (H = 200):
10 tasks x 1 trial of 4 episodes (8,000 env steps), 10 PPO epochs over whole trials. Prints one
line per iteration; ``--json PATH`` writes the figures.

    python benchmarks/rl2_ppo.py                  # 10 tasks x 4 episodes, 3 iterations
    python benchmarks/rl2_ppo.py --quick          # 10 tasks x 2 episodes, 2 epochs, 1 iteration
    python benchmarks/rl2_ppo.py --device cuda
    python benchmarks/rl2_ppo.py --adaptation-curve runs/rl2-ppo-HalfCheetahVel-...

``--adaptation-curve RUN_DIR`` instead evaluates a run's latest checkpoint on the family's
held-out tasks (``task_split("default").test``): the mean return of episode 1..K of a trial
(the hidden state carried through the trial), with 95% intervals over tasks.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _iteration import run_iterations, summarize

from metarl.agent import config_from_dict
from metarl.agents import RL2PPO
from metarl.envs import FamilyTaskSampler, make_family
from metarl.runs import latest_checkpoint, load_checkpoint, read_run_config, resolve_device
from metarl.train import make_sampler


def adaptation_curve(
    run_dir: Path, episodes: int | None, trials_per_task: int, seed: int
) -> dict[str, object]:
    """Mean return of episode 1..K of a trial on the held-out tasks, with 95% intervals."""
    saved = read_run_config(run_dir)
    config = config_from_dict(RL2PPO.config_cls, saved["config"])
    fam = saved["family"]
    family = make_family(fam["name"], variant=fam["variant"], horizon=fam["horizon"])
    agent = RL2PPO(config, family.observation_space, family.action_space, "cpu")
    checkpoint = load_checkpoint(latest_checkpoint(run_dir))
    agent.load_state_dict(checkpoint["agent"])
    tasks = list(family.task_split("default").test)
    K = episodes or config.episodes_per_trial
    sampler = make_sampler(family, agent.policy)
    try:
        per_task = agent.adaptation_curve(sampler, tasks, K - 1, trials_per_task, seed)
    finally:
        sampler.close()
    curve = []
    for k, row in enumerate(per_task):
        mean = float(row.mean())
        half = 1.96 * float(row.std(ddof=1)) / max(len(tasks), 1) ** 0.5 if len(tasks) > 1 else 0.0
        curve.append({"episode": k + 1, "return": mean, "ci95": half})
        print(f"  episode {k + 1} of the trial: {mean:9.2f} +- {half:.2f}")
    return {
        "run_dir": str(run_dir),
        "env": fam["name"],
        "horizon": fam["horizon"],
        "iterations_trained": int(checkpoint["iteration"]),
        "test_tasks": len(tasks),
        "trials_per_task": trials_per_task,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetahVel")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--meta-batch-size", type=int, default=10)
    parser.add_argument("--episodes-per-trial", type=int, default=4)
    parser.add_argument("--update-epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="inline", choices=["inline", "processes", "ray"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 episodes, 2 epochs, 1 iteration")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--adaptation-curve", type=Path, default=None, metavar="RUN_DIR")
    parser.add_argument("--episodes", type=int, default=None, help="episodes of the curve")
    parser.add_argument("--trials-per-task", type=int, default=4, help="trials of the curve")
    args = parser.parse_args()
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    if args.adaptation_curve is not None:
        print(f"adaptation curve of {args.adaptation_curve} on held-out tasks:")
        result = adaptation_curve(
            args.adaptation_curve, args.episodes, args.trials_per_task, seed=12345
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return
    if args.quick:
        args.episodes_per_trial, args.update_epochs, args.iterations = 2, 2, 1

    torch.manual_seed(0)
    family = make_family(args.env)
    config = replace(
        RL2PPO.preset("default", args.env),
        meta_batch_size=args.meta_batch_size,
        episodes_per_trial=args.episodes_per_trial,
        update_epochs=args.update_epochs,
    )
    device = resolve_device(args.device)
    agent = RL2PPO(config, family.observation_space, family.action_space, device)
    tasks_source = FamilyTaskSampler(family)
    sampler = make_sampler(tasks_source, agent.policy, args.backend, args.workers)
    rng = np.random.default_rng(0)
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
