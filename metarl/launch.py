"""Names to objects: the one place that turns an agent's name, a family's name or a
``--tasks module:callable`` and the run's settings into the objects :func:`metarl.train.train`
takes. ``metarl train ALGO ...``, the scripts in ``experiments/`` and the results suite call
:func:`launch`; Python code that has its objects calls ``train`` itself::

    from metarl.registry import make_family
    from metarl.launch import make_agent
    from metarl.train import RunArgs, train

    family = make_family("Point2DNav", variant="maml-rllab")
    run = RunArgs(seed=0)
    agent = make_agent("maml-trpo", "quick", family, seed=run.seed)
    train(agent, family, run)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from metarl.agent import MetaAgent
from metarl.family import TaskFamily
from metarl.registry import agent_class, make_family
from metarl.runs import require_wandb, resolve_device
from metarl.sampling.rollout import env_spaces
from metarl.tasks import TaskSampler, load_task_sampler
from metarl.train import RunArgs, check_run_args, resume_settings, sampler_name, train

__all__ = ["build", "launch", "make_agent"]


def make_agent(
    name: str,
    config: Any,
    tasks: TaskFamily | TaskSampler,
    *,
    seed: int | None = None,
    device: str | torch.device = "cpu",
) -> MetaAgent:
    """The agent ``name`` (see ``metarl list``) for ``tasks``' spaces, with ``config`` (its
    config dataclass, or a preset's name), initialized from torch's generator seeded with
    ``seed`` (None: as it stands)."""
    cls = agent_class(name)
    if isinstance(config, str):
        config = cls.preset(config, str(getattr(tasks, "name", None) or sampler_name(tasks)))
    observation_space, action_space = env_spaces(tasks)
    if seed is not None:
        torch.manual_seed(seed)  # the policy's initialization
    return cls(config, observation_space, action_space, resolve_device(str(device)))


def build(
    algo: str,
    run: RunArgs,
    config: Any,
    iterations: int | None = None,
    task_sampler: TaskSampler | None = None,
    given: Collection[str] = (),
) -> tuple[MetaAgent, TaskFamily | TaskSampler, RunArgs]:
    """``(agent, tasks, run)`` for ``train``: the agent ``algo`` with ``config``, the family
    ``run.env`` (or ``task_sampler``, or the factory ``run.tasks``), seeded with ``run.seed``.

    ``iterations`` overrides ``config.iterations`` (the total to reach; it may extend a resumed
    run). With ``run.resume`` the run's own settings and config are used; ``given`` names the
    settings the user gave explicitly (the command line's flags), each checked against the run:
    how it executes and its step sizes may change, any other setting that differs is refused.

    Raises:
        ValueError: unknown agent or family, impossible settings; RunError: a resume folder
            that is not a run of this agent and family — all before any work.
    """
    agent_class(algo)  # an unknown name fails first
    if run.resume is not None:
        run, config = resume_settings(algo, run, config, set(given))
    if run.tasks is not None and task_sampler is None:
        task_sampler = load_task_sampler(run.tasks)
        if run.env == RunArgs.env:
            run = replace(run, env=sampler_name(task_sampler))
    if iterations is not None and iterations != config.iterations:
        config = replace(config, iterations=int(iterations))
    check_run_args(run, int(config.iterations))
    if run.track:
        require_wandb("or leave out --track" if run.resume is None else "or resume with --no-track")
    tasks: TaskFamily | TaskSampler
    if task_sampler is not None:
        if not isinstance(task_sampler, TaskSampler):
            raise TypeError(
                "task_sampler must have sample(n, rng) and make_env(task) "
                f"(metarl.tasks.TaskSampler), got {type(task_sampler).__name__}"
            )
        name = sampler_name(task_sampler)
        if run.env != name:
            raise ValueError(
                f"with a custom task sampler, RunArgs.env names it: pass env={name!r} "
                f"(got {run.env!r})"
            )
        tasks = task_sampler
    else:
        tasks = make_family(run.env, variant=run.variant, horizon=run.horizon)
    agent = make_agent(algo, config, tasks, seed=run.seed, device=run.device)
    return agent, tasks, run


def launch(
    algo: str,
    run: RunArgs,
    config: Any,
    iterations: int | None = None,
    task_sampler: TaskSampler | None = None,
    given: Collection[str] = (),
) -> Path:
    """Meta-train ``algo`` with ``config`` as ``run`` says (see :func:`build`); returns the run
    folder."""
    return train(*build(algo, run, config, iterations, task_sampler, given))
