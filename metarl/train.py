"""The meta-training loop shared by every agent: run folder, logs, checkpoints, exact resume.

``train(algo, run, config)`` is what ``metarl train ALGO ...`` and the scripts in
``experiments/`` call. A run resumed with ``--resume RUN_DIR`` at iteration k ends bit-identical
to one that never stopped: the checkpoint holds the agent's state and every random state, and
the sampler holds none of its own (its seeds come from the run's generator).
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from metarl.agent import MetaAgent, config_from_dict
from metarl.runs import (
    MetricsLogger,
    RunError,
    capture_rng_state,
    create_run_dir,
    latest_checkpoint,
    load_checkpoint,
    read_run_config,
    resolve_device,
    restore_rng_state,
    save_checkpoint,
)
from metarl.tasks import TaskSampler, load_task_sampler

if TYPE_CHECKING:
    from metarl.sampling import Sampler

__all__ = ["RunArgs", "agent_registry", "build_agent", "make_sampler", "train"]


@dataclass(frozen=True)
class RunArgs:
    """Settings of a training run that are not the algorithm's hyperparameters."""

    env: str = "HalfCheetahVel"
    """Task family (see `metarl list`)."""
    tasks: str | None = None
    """A task sampler to train on instead of a family: module:callable, an importable factory
    that returns one (saved with the run, so eval, render and --resume build it again)."""
    variant: str | None = None
    """Family variant (e.g. maml, pearl); None: the family's default."""
    horizon: int | None = None
    """Episode length in env steps; None: the variant's."""
    preset: str = "quick"
    """Hyperparameter preset of the algorithm for this family (e.g. quick, paper)."""
    seed: int = 0
    """Seed of every random stream of the run."""
    run_dir: Path | None = None
    """Where the run folder goes; None: runs/<algo>-<env>-<time>."""
    device: str = "auto"
    """Where the optimization runs: auto, cpu, cuda (sampling stays on CPU workers)."""
    resume: Path | None = None
    """Continue the run in this folder from its latest checkpoint."""
    backend: Literal["inline", "processes", "ray"] = "inline"
    """Sampler backend."""
    num_workers: int = 1
    """Worker processes or Ray actors (processes/ray backends)."""
    torch_threads: int = 1
    """CPU threads of the optimization. 1 keeps a busy machine from oversubscribing (torch's
    threads spin at every barrier and slow to a crawl when cores are shared); raise it on an
    idle many-core machine."""
    checkpoint_every: int = 10
    """Write checkpoints/latest.pt every this many iterations (and at the end)."""
    keep_every: int = 50
    """Also keep checkpoints/iter_XXXXXX.pt every this many iterations."""
    progress: bool = True
    """Show a progress bar."""


def agent_registry() -> dict[str, type[MetaAgent]]:
    """Algorithm name -> agent class (looked up lazily: the core never imports agents eagerly)."""
    from metarl.agents import AGENTS

    return dict(AGENTS)


def _agent_class(algo: str) -> type[MetaAgent]:
    registry = agent_registry()
    if algo not in registry:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {sorted(registry)}")
    return registry[algo]


def build_agent(algo: str, config: Any, family: Any, device: torch.device) -> MetaAgent:
    return _agent_class(algo)(config, family.observation_space, family.action_space, device)


def _check_run_args(run: RunArgs, iterations: int) -> None:
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if run.checkpoint_every < 1 or run.keep_every < 1:
        raise ValueError("checkpoint_every and keep_every must be at least 1")
    if run.num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {run.num_workers}")
    if run.torch_threads < 1:
        raise ValueError(f"torch_threads must be at least 1, got {run.torch_threads}")


def _resolve_resume(algo: str, run: RunArgs, config: Any) -> tuple[RunArgs, Any]:
    """Check a --resume folder and return the run settings and config it was made with."""
    assert run.resume is not None
    saved = read_run_config(run.resume)
    if saved.get("algo") != algo:
        raise RunError(f"{run.resume} was made by {saved.get('algo')!r}, not {algo!r}")
    saved_run = saved.get("run", {})
    if saved_run.get("env") != run.env and run.env != RunArgs.env:
        raise RunError(f"{run.resume} trains {saved_run.get('env')!r}, not {run.env!r}")
    latest_checkpoint(run.resume)
    fields = {k: v for k, v in saved_run.items() if k in RunArgs.__dataclass_fields__}
    for key in ("run_dir", "resume"):
        fields.pop(key, None)
    resumed = RunArgs(
        **{
            **fields,
            "run_dir": Path(run.resume),
            "resume": Path(run.resume),
            "progress": run.progress,
            "device": run.device,
            "backend": run.backend,
            "num_workers": run.num_workers,
        }
    )
    saved_config = config_from_dict(type(config), saved["config"])
    return resumed, saved_config


def _task_source(run: RunArgs, task_sampler: TaskSampler | None) -> tuple[Any, dict[str, Any]]:
    """The task sampler to train on and how the run folder describes it."""
    from metarl.envs import FamilyTaskSampler, make_family

    if task_sampler is None:
        family = make_family(run.env, variant=run.variant, horizon=run.horizon)
        described = {"name": family.name, "variant": family.variant, "horizon": family.horizon}
        return FamilyTaskSampler(family), described
    if not isinstance(task_sampler, TaskSampler):
        raise TypeError(
            "task_sampler must have sample(n, rng) and make_env(task) (metarl.tasks.TaskSampler), "
            f"got {type(task_sampler).__name__}"
        )
    name = sampler_name(task_sampler)
    if run.env != name:
        raise ValueError(
            f"with a custom task sampler, RunArgs.env names it: pass env={name!r} (got {run.env!r})"
        )
    described = {"name": name, "custom": True, "horizon": run.horizon}
    if run.tasks is not None:
        described["tasks"] = run.tasks
    return task_sampler, described


def sampler_name(task_sampler: Any) -> str:
    """The name a run gets from its task sampler (its ``name``, else its class)."""
    return str(getattr(task_sampler, "name", None) or type(task_sampler).__name__)


def train(
    algo: str,
    run: RunArgs,
    config: Any,
    iterations: int | None = None,
    task_sampler: TaskSampler | None = None,
) -> Path:
    """Meta-train ``algo`` with ``config`` as ``run`` says; returns the run folder.

    ``iterations`` overrides ``config.iterations`` (the total to reach); with ``run.resume`` the
    saved config is used and ``iterations`` may extend it.

    ``task_sampler`` trains on any :class:`~metarl.tasks.TaskSampler` (e.g. a
    :class:`~metarl.tasks.GymKwargsTaskSampler`) instead of the built-in family ``run.env``;
    ``run.env`` must then be the sampler's ``name``, ``run.horizon`` its episode length (unless
    its env has ``max_episode_steps``), and a resumed run passes the same sampler again.

    Raises:
        ValueError: unknown algorithm or family, impossible settings, or a ``--resume`` folder
            that is not a run of this algorithm and family — all before any work.
    """
    agent_cls = _agent_class(algo)
    if run.resume is not None:
        run, config = _resolve_resume(algo, run, config)
    if run.tasks is not None and task_sampler is None:
        task_sampler = load_task_sampler(run.tasks)
        if run.env == RunArgs.env:
            run = replace(run, env=sampler_name(task_sampler))
    if iterations is not None and iterations != config.iterations:
        config = replace(config, iterations=int(iterations))
    iterations = int(config.iterations)
    _check_run_args(run, iterations)
    source, described = _task_source(run, task_sampler)
    threads = torch.get_num_threads()
    torch.set_num_threads(run.torch_threads)
    folder = _RunFolder()
    try:
        return _train(algo, run, config, iterations, agent_cls, source, described, folder)
    except Exception:
        folder.discard_unless_checkpointed()
        raise
    finally:
        torch.set_num_threads(threads)


class _RunFolder:
    """The fresh run folder of a run: created with its config, and removed again (or emptied,
    if it existed empty) when the run fails before its first checkpoint, so that the same
    command can run again. Ctrl-C is not a failure: it checkpoints the run for --resume."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.existed = False

    def create(self, path: Path, config: Mapping[str, Any]) -> None:
        path = Path(path)
        existed = path.exists()
        create_run_dir(path, config)
        self.path, self.existed = path, existed

    def discard_unless_checkpointed(self) -> None:
        if self.path is None:
            return
        try:
            latest_checkpoint(self.path)
            return
        except RunError:
            pass
        if self.existed:
            for child in self.path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def _train(
    algo: str,
    run: RunArgs,
    config: Any,
    iterations: int,
    agent_cls: type[MetaAgent],
    source: Any,
    described: dict[str, Any],
    folder: _RunFolder,
) -> Path:
    from metarl.sampling.rollout import env_spaces

    observation_space, action_space = env_spaces(source)
    device = resolve_device(run.device)
    torch.manual_seed(run.seed)  # the policy's initialization
    agent = agent_cls(config, observation_space, action_space, device)
    # Built before the run folder: a sampler that cannot start leaves nothing behind.
    sampler = make_sampler(source, agent.policy, run.backend, run.num_workers, run.horizon)
    rng = np.random.default_rng(run.seed)
    start = 0
    if run.resume is not None:
        run_dir = Path(run.resume)
        state = load_checkpoint(latest_checkpoint(run_dir), map_location=device)
        agent.load_state_dict(state["agent"])
        restore_rng_state(rng, state["rng"])
        start = int(state["iteration"])
        if start >= iterations:
            sampler.close()
            print(f"{run_dir} already finished {start} of {iterations} iterations", file=sys.stderr)
            return run_dir
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = run.run_dir or Path("runs") / f"{algo}-{run.env}-{stamp}"
        try:
            folder.create(
                run_dir,
                {"algo": algo, "run": asdict(run), "config": asdict(config), "family": described},
            )
        except BaseException:
            sampler.close()
            raise
    logger = MetricsLogger(run_dir, start_iteration=start)

    def snapshot(done: int) -> dict[str, Any]:
        return {
            "iteration": done,
            "algo": algo,
            "agent": copy.deepcopy(agent.state_dict()),
            "rng": capture_rng_state(rng),
        }

    last = snapshot(start)
    bar = _progress(run.progress, start, iterations, f"{algo} {run.env}")
    try:
        for it in range(start, iterations):
            t0 = time.perf_counter()
            tasks = source.sample(config.meta_batch_size, rng)
            metrics = agent.train_step(sampler, tasks, rng)
            metrics["time/iteration"] = time.perf_counter() - t0
            logger.log(it, metrics)
            done = it + 1
            last = snapshot(done)
            if done % run.checkpoint_every == 0 or done == iterations:
                save_checkpoint(
                    run_dir, last, done, keep=done % run.keep_every == 0 or done == iterations
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(_postfix(metrics), refresh=False)
    except KeyboardInterrupt:
        save_checkpoint(run_dir, last, int(last["iteration"]), keep=False)
        print(
            f"\ninterrupted: saved iteration {last['iteration']} to {run_dir}; continue with "
            f"--resume {run_dir}",
            file=sys.stderr,
        )
        raise
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        sampler.close()
    return run_dir


def make_sampler(
    source: Any,
    policy: torch.nn.Module,
    backend: str = "inline",
    num_workers: int = 1,
    horizon: int | None = None,
) -> Sampler:
    """The sampler backend ``backend`` (inline, processes, ray) for ``source`` and ``policy``."""
    from metarl.sampling import InlineSampler, ProcessSampler, RaySampler

    if backend == "inline":
        return InlineSampler(source, policy, horizon=horizon)
    if backend == "processes":
        return ProcessSampler(source, policy, num_workers=num_workers, horizon=horizon)
    if backend == "ray":
        return RaySampler(source, policy, num_workers=num_workers, horizon=horizon)
    raise ValueError(f"unknown sampler backend {backend!r}; choose inline, processes or ray")


def _progress(enabled: bool, start: int, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit="it", dynamic_ncols=True)


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    shown = {
        "pre": "meta/return_pre_adapt",
        "post": "meta/return_post_adapt",
        "steps/s": "time/env_steps_per_s",
    }
    return {short: f"{metrics[key]:.4g}" for short, key in shown.items() if key in metrics}
