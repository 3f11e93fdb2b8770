"""The meta-training loop shared by every agent: run folder, logs, checkpoints, exact resume.

``train(agent, tasks, run)`` takes objects: a :class:`~metarl.agent.MetaAgent`, the task family
or task sampler it meta-trains on, and the run's settings (:class:`RunArgs`). Names become
objects in one place, :mod:`metarl.launch`, which ``metarl train ALGO ...``, the scripts in
``experiments/`` and the results suite call. A run resumed at iteration k ends bit-identical to
one that never stopped: the checkpoint holds the agent's state and every random state, and the
sampler holds none of its own (its seeds come from the run's generator).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from metarl.agent import MetaAgent, config_from_dict, renamed_config
from metarl.family import FamilyTaskSampler, TaskFamily
from metarl.progress import progress_bar
from metarl.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LATEST,
    LOCK_FILE,
    METRICS_FILE,
    WANDB_DIR,
    MetricsLogger,
    RunError,
    RunLock,
    TrainingError,
    WandbSettings,
    capture_rng_state,
    create_run_dir,
    kept_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    nonfinite_tensors,
    one_line,
    read_run_config,
    record_resume,
    remove_stale_temporaries,
    require_wandb,
    restore_rng_state,
    save_checkpoint,
    to_jsonable,
)
from metarl.tasks import TaskSampler

__all__ = ["RunArgs", "Terminated", "TrainingError", "check_run_args", "resume_settings", "train"]


class Terminated(SystemExit):
    """Training was stopped by SIGTERM (a scheduler, ``timeout`` or ``kill``), handled like
    Ctrl-C: the last completed iteration is saved and one line says how to continue.

    A :class:`SystemExit` with status 143 (128 + SIGTERM, what a shell reports for a process
    that SIGTERM ended), so a command line that lets it through exits as such a process does.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class _SigtermHandler:
    """While installed, the first SIGTERM raises :class:`Terminated` in the main thread; later
    ones are ignored, so they cannot cut short the save of the last completed iteration (a
    SIGKILL still ends the process at once). Within :meth:`deferred` it waits for the block's
    end."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False
        self._deferring = False
        self._pending = False
        self.fired = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.fired:
            return
        self.fired = True
        if self._deferring:
            self._pending = True
            return
        raise Terminated()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A SIGTERM within the block raises at its end: what it writes together (an
        iteration's metrics row, the state kept as completed, its checkpoint) stays together."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending:
            self._pending = False
            raise Terminated()

    def install(self) -> None:
        """Install the handler (again: ``ray.init`` replaces it with one that exits at once)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread; elsewhere SIGTERM stays as it is
        current = signal.getsignal(signal.SIGTERM)
        if current == self._handle:
            return
        if not self._installed:
            self._previous = current
        signal.signal(signal.SIGTERM, self._handle)
        self._installed = True

    def restore(self) -> None:
        """Put back the handler that was there before :meth:`install`."""
        if self._installed:
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGTERM, previous)
            self._installed = False


def _stopped_by(exc: BaseException) -> str | None:
    """How a signal stopped the run ("terminated by SIGTERM", "interrupted"), or None."""
    if isinstance(exc, Terminated):
        return "terminated by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return None


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
    """Where the optimization runs: auto, cpu, cuda (sampling stays on CPU workers, but for
    the warp backend's, which steps the physics and the policy on this device too)."""
    resume: Path | None = None
    """Continue the run in this folder from its latest checkpoint."""
    backend: Literal["inline", "processes", "ray", "warp"] = "inline"
    """Sampler backend: inline (this process), processes, ray, or warp (MuJoCo Warp on the
    device; every MuJoCo family but HumanoidDir, pip install 'metarl[warp]')."""
    num_workers: int = 1
    """Worker processes or Ray actors (processes/ray backends)."""
    torch_threads: int = 1
    """CPU threads of the optimization. 1 keeps a busy machine from oversubscribing (torch's
    threads spin at every barrier and slow to a crawl when cores are shared); raise it on an
    idle many-core machine."""
    checkpoint_every: int = 10
    """Write checkpoints/latest.pt every this many iterations (and at the end)."""
    keep_every: int = 50
    """Also keep checkpoints/iter_XXXXXX.pt every this many iterations (whatever
    checkpoint_every is; each also refreshes latest.pt)."""
    progress: bool = True
    """Show a progress bar."""
    track: bool = False
    """Also log the metrics to Weights & Biases (pip install wandb), as cleanrl's --track
    does: it mirrors the TensorBoard events, whose step is the env steps so far."""
    wandb_project: str = "metarl"
    """Weights & Biases project of a tracked run."""
    wandb_entity: str | None = None
    """Weights & Biases team or user of a tracked run; None: the account's default."""


def check_run_args(run: RunArgs, iterations: int) -> None:
    """Raise ValueError (one line) for run settings no run can have."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if run.checkpoint_every < 1 or run.keep_every < 1:
        raise ValueError("checkpoint_every and keep_every must be at least 1")
    if run.num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {run.num_workers}")
    if run.torch_threads < 1:
        raise ValueError(f"torch_threads must be at least 1, got {run.torch_threads}")
    if isinstance(run.seed, bool) or not isinstance(run.seed, int) or not 0 <= run.seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {run.seed!r}")


# What --resume may change (applied from the checkpoint on; config.json records the step
# sizes): how the run is executed, and the step sizes, which a diverged run lowers. Every
# other setting given with --resume must equal the run's own.
RESUME_RUN_SETTINGS = (
    "progress",
    "track",
    "wandb_project",
    "wandb_entity",
    "device",
    "backend",
    "num_workers",
    "torch_threads",
    "checkpoint_every",
    "keep_every",
)
STEP_SIZES = ("adapt_lr", "max_kl", "meta_lr", "learning_rate")
"""Step sizes a resumed run may change (the first of these an agent's config has are named
when its policy diverges)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_settings(
    algo: str, run: RunArgs, config: Any, given: Collection[str]
) -> tuple[RunArgs, Any]:
    """Check a --resume folder against the settings ``given`` explicitly (the command line's
    flags); returns the run settings and config to continue with.

    Raises:
        RunError: another algorithm or family, or a given setting that differs from the
            run's and cannot change on resume (named, with its value and the run's).
    """
    assert run.resume is not None
    saved = read_run_config(run.resume)
    if saved.get("algo") != algo:
        raise RunError(f"{run.resume} was made by {saved.get('algo')!r}, not {algo!r}")
    saved_run = saved.get("run", {})
    if ("env" in given or run.env != RunArgs.env) and saved_run.get("env") != run.env:
        raise RunError(f"{run.resume} trains {saved_run.get('env')!r}, not {run.env!r}")
    latest_checkpoint(run.resume)
    saved_config = config_from_dict(type(config), saved["config"])
    saved_values = renamed_config(saved["config"])
    if run.run_dir is not None and "run_dir" in given and Path(run.run_dir) != Path(run.resume):
        raise RunError(f"--run-dir {run.run_dir} and --resume {run.resume} name different runs")
    run_fields = set(RunArgs.__dataclass_fields__)
    config_fields = {f.name for f in fields(type(config))}
    changes: dict[str, Any] = {}
    for name in sorted(given):
        if name in ("env", "resume", "run_dir", "iterations") or name in RESUME_RUN_SETTINGS:
            continue
        if name in run_fields:
            value, theirs = to_jsonable(getattr(run, name)), saved_run.get(name)
        elif name in config_fields:
            value, theirs = to_jsonable(getattr(config, name)), saved_values.get(name)
            if name in STEP_SIZES:
                if value != theirs:
                    changes[name] = (theirs, value)
                continue
        else:
            continue  # not a setting (e.g. an experiment script's --algo)
        if value != theirs:
            allowed = ", ".join(
                _flag(n)
                for n in ("iterations", *RESUME_RUN_SETTINGS, *STEP_SIZES)
                if n in run_fields or n in config_fields
            )
            raise RunError(
                f"{_flag(name)} {value} differs from the run's {theirs}: a resumed run keeps "
                f"its {_flag(name)} (resume may change only {allowed}); start a new run to "
                "change it"
            )
    values = {k: v for k, v in saved_run.items() if k in run_fields}
    for key in ("run_dir", "resume"):
        values.pop(key, None)
    for key in RESUME_RUN_SETTINGS:
        if key in ("progress", "device", "backend", "num_workers") or key in given:
            values[key] = getattr(run, key)
    resumed = RunArgs(**{**values, "run_dir": Path(run.resume), "resume": Path(run.resume)})
    if changes:
        saved_config = replace(saved_config, **{k: new for k, (_, new) in changes.items()})
    return resumed, saved_config


def _resumed(run: RunArgs) -> RunArgs:
    """The settings a resumed run continues with: its own, but for how this process executes
    it (:data:`RESUME_RUN_SETTINGS`, taken from ``run``)."""
    assert run.resume is not None
    saved_run = read_run_config(run.resume).get("run", {})
    kept = set(RunArgs.__dataclass_fields__) - {"run_dir", "resume", *RESUME_RUN_SETTINGS}
    values = {k: v for k, v in saved_run.items() if k in kept}
    values |= {k: getattr(run, k) for k in RESUME_RUN_SETTINGS}
    return RunArgs(**values, run_dir=Path(run.resume), resume=Path(run.resume))


def _resume_changes(agent: MetaAgent, run_dir: Path) -> dict[str, Any]:
    """The settings in which ``agent``'s config differs from the run's ``{name: (old, new)}``:
    step sizes (:data:`STEP_SIZES`) and the iteration count may change on resume.

    Raises:
        RunError: a run of another agent, or another setting that differs.
    """
    saved = read_run_config(run_dir)
    if saved.get("algo") != agent.name:
        raise RunError(f"{run_dir} was made by {saved.get('algo')!r}, not {agent.name!r}")
    latest_checkpoint(run_dir)
    theirs = config_from_dict(type(agent.config), saved["config"])
    changes: dict[str, Any] = {}
    for f in sorted(fields(agent.config), key=lambda f: (f.name == "iterations", f.name)):
        old, new = to_jsonable(getattr(theirs, f.name)), to_jsonable(getattr(agent.config, f.name))
        if old == new:
            continue
        if f.name not in (*STEP_SIZES, "iterations"):
            raise RunError(
                f"the agent's {f.name}={new!r} differs from the run's {old!r}: a resumed run "
                f"keeps its settings but for {', '.join((*STEP_SIZES, 'iterations'))}"
            )
        changes[f.name] = (old, new)
    return changes


def _task_source(run: RunArgs, tasks: Any) -> tuple[Any, RunArgs, dict[str, Any]]:
    """The task sampler to train on, the run settings that name it, and how the run folder
    describes it."""
    if isinstance(tasks, TaskFamily):
        for key, theirs in (("variant", tasks.variant), ("horizon", tasks.horizon)):
            ours = getattr(run, key)
            if ours is not None and ours != theirs:
                raise ValueError(f"RunArgs.{key} is {ours!r} but the family's is {theirs!r}")
        _check_name(run, tasks.name)
        run = replace(run, env=tasks.name, variant=tasks.variant, horizon=tasks.horizon)
        described = {"name": tasks.name, "variant": tasks.variant, "horizon": tasks.horizon}
        return FamilyTaskSampler(tasks), run, described
    if not isinstance(tasks, TaskSampler):
        raise TypeError(
            "tasks must be a task family (metarl.registry.make_family(name)) or a task sampler "
            "with sample(n, rng) and make_env(task) (metarl.tasks.TaskSampler), got "
            f"{type(tasks).__module__}.{type(tasks).__qualname__}"
        )
    name = sampler_name(tasks)
    _check_name(run, name)
    run = replace(run, env=name)
    described = {"name": name, "custom": True, "horizon": run.horizon}
    if run.tasks is not None:
        described["tasks"] = run.tasks
    return tasks, run, described


def _check_name(run: RunArgs, name: str) -> None:
    if run.env not in (RunArgs.env, name):
        where = f"{run.resume} trains" if run.resume is not None else "RunArgs.env is"
        raise RunError(f"{where} {run.env!r}, but the tasks are {name!r}")


def sampler_name(task_sampler: Any) -> str:
    """The name a run gets from its task sampler (its ``name``, else its class)."""
    return str(getattr(task_sampler, "name", None) or type(task_sampler).__name__)


def train(agent: MetaAgent, tasks: TaskFamily | TaskSampler, run: RunArgs | None = None) -> Path:
    """Meta-train ``agent`` on ``tasks`` for ``agent.config.iterations`` iterations (the total
    to reach) as ``run`` says; returns the run folder.

    ``tasks`` is a task family (:func:`metarl.registry.make_family`) or any task sampler
    (:class:`~metarl.tasks.TaskSampler`, e.g. a :class:`~metarl.tasks.GymKwargsTaskSampler`),
    whose ``run.horizon`` is its episode length unless its env has ``max_episode_steps``.
    Build the agent right after seeding torch with ``run.seed``
    (:func:`metarl.launch.make_agent` does) for its initialization to be the run's.

    With ``run.resume`` the run continues from its latest checkpoint with its own settings, but
    for how it executes (``backend``, ``num_workers``, ``device``, ``torch_threads``,
    ``checkpoint_every``, ``keep_every``, ``progress``, tracking, taken from ``run``): the agent
    must be of the run's kind and config, but for its step sizes (:data:`STEP_SIZES`) and
    iteration count, whose change ``config.json`` records; the tasks must be the run's.

    Raises:
        ValueError: impossible settings; RunError: a resume folder that is not a run of this
            agent and these tasks, or a config that differs from it — all before any work.
    """
    run = RunArgs() if run is None else run
    if not isinstance(agent, MetaAgent):
        raise TypeError(
            f"agent must be a metarl.agent.MetaAgent (metarl.launch.make_agent builds one by "
            f"name), got {type(agent).__module__}.{type(agent).__qualname__}"
        )
    iterations = int(agent.config.iterations)
    changes: dict[str, Any] = {}
    if run.resume is not None:
        resume = Path(run.resume)
        run = _resumed(run)
        changes = _resume_changes(agent, resume)
    check_run_args(run, iterations)
    if run.track:
        require_wandb("or leave out --track" if run.resume is None else "or resume with --no-track")
    source, run, described = _task_source(run, tasks)
    sigterm = _SigtermHandler()
    sigterm.install()
    try:
        with torch_threads(run.torch_threads):
            return _train(agent, run, iterations, source, described, changes, sigterm)
    finally:
        sigterm.restore()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to ``n`` for the block, then put back (train, eval and render:
    on a shared machine torch's default threads spin and slow every process down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(
    agent: MetaAgent,
    run: RunArgs,
    iterations: int,
    source: Any,
    described: dict[str, Any],
    changes: Mapping[str, Any],
    sigterm: _SigtermHandler,
) -> Path:
    from metarl.sampling import make_sampler

    algo, config, device = agent.name, agent.config, agent.device
    # Built before the run folder: a sampler that cannot start leaves nothing behind.
    try:
        sampler = make_sampler(source, agent.policy, run.backend, run.num_workers, run.horizon)
    except BaseException as exc:
        stopped = _stopped_by(exc)
        if stopped is not None:
            kept = (
                f"{run.resume} is untouched; continue with --resume {run.resume}"
                if run.resume is not None
                else "nothing was written; run the same command again"
            )
            print(f"\n{stopped} before the first iteration: {kept}", file=sys.stderr)
        raise
    sigterm.install()  # ray.init (the ray backend) installs its own SIGTERM handler
    sampler.on_diverged = "raise"  # no update from a diverged batch: stop with the last good state
    rng = np.random.default_rng(run.seed)
    start = 0
    restored = False  # whether start is the checkpoint's iteration yet
    lock: RunLock | None = None
    existed = False
    try:
        if run.resume is not None:
            run_dir = Path(run.resume)
            lock = RunLock(run_dir)  # before anything in the folder is read or changed
            remove_stale_temporaries(run_dir)
            start = _restore(agent, rng, latest_checkpoint(run_dir), algo, device)
            restored = True
            if changes and start < iterations:
                record_resume(run_dir, asdict(config), start, dict(changes))
            if start >= iterations:
                sampler.close()
                lock.release()
                print(
                    f"{run_dir} already finished {start} of {iterations} iterations",
                    file=sys.stderr,
                )
                return run_dir
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = run.run_dir or Path("runs") / f"{algo}-{run.env}-{stamp}"
            if _never_started(run_dir):
                # A run killed (SIGKILL, power loss) before its first checkpoint: the same
                # command starts it again, unless its trainer is still alive.
                RunLock(run_dir).release()
                _remove_run_dir(run_dir)
            # A folder the user made for the run (it must be empty) is emptied, never removed,
            # if the run fails before it completes anything.
            existed = Path(run_dir).is_dir()
            create_run_dir(
                run_dir,
                {"algo": algo, "run": asdict(run), "config": asdict(config), "family": described},
            )
            lock = RunLock(run_dir)
        tracked = None
        if run.track:
            saved_config = read_run_config(run_dir)
            tracked = WandbSettings(
                run.wandb_project, run.wandb_entity, Path(run_dir).resolve().name, saved_config
            )
        logger = MetricsLogger(run_dir, start_iteration=start, wandb=tracked)
    except BaseException as exc:
        sampler.close()
        if lock is not None:
            lock.release()
        stopped = _stopped_by(exc)
        if stopped is not None:
            if run.resume is not None:
                ckpt = Path(run.resume) / CHECKPOINT_DIR / LATEST
                kept = f"{ckpt} is untouched; continue with --resume {run.resume}"
            elif lock is not None:
                _remove_run_dir(run_dir, keep_folder=existed)
                what = "emptied" if existed else "removed"
                kept = f"{run_dir} was {what}; run the same command again"
            else:
                kept = "run the same command again"
            print(f"\n{stopped} before the first iteration: {kept}", file=sys.stderr)
            raise
        if isinstance(exc, MemoryError | OSError) and run.resume is not None:
            ckpt = Path(run.resume) / CHECKPOINT_DIR / LATEST
            kept = f"keeps iteration {start} untouched" if restored else "is untouched"
            raise TrainingError(
                f"cannot resume: {one_line(exc)}; {ckpt} {kept}; "
                f"continue with --resume {run.resume} once that is fixed"
            ) from exc
        if isinstance(exc, MemoryError | OSError) and lock is not None:
            _remove_run_dir(run_dir, keep_folder=existed)  # could not start: nothing to keep
            raise TrainingError(
                f"cannot start the run: {one_line(exc)}; {run_dir} was removed, run the "
                "same command again once that is fixed"
            ) from exc
        raise

    def snapshot(done: int) -> dict[str, Any]:
        return {
            "iteration": done,
            "algo": algo,
            "agent": copy.deepcopy(agent.state_dict()),
            "rng": capture_rng_state(rng),
        }

    last = snapshot(start)
    saved = start  # the iteration checkpoints/latest.pt holds (0 and no file for a new run)
    running = start + 1  # the iteration in flight (1-based)
    bar = progress_bar(run.progress, iterations, f"{algo} {run.env}", "it", initial=start)
    try:
        for it in range(start, iterations):
            running = it + 1
            t0 = time.perf_counter()
            tasks = source.sample(config.meta_batch_size, rng)
            metrics = agent.train_step(sampler, tasks, rng)
            metrics["time/iteration"] = time.perf_counter() - t0
            done = it + 1
            candidate = snapshot(done)
            bad = nonfinite_tensors(candidate["agent"])
            if bad:  # never log, save or continue from a non-finite state
                raise _NonFiniteUpdate(f"its update made {', '.join(bad[:3])} non-finite")
            with sigterm.deferred():  # its row logged is the iteration kept as completed
                logger.log(it, metrics)
                last = candidate
                keep = done % run.keep_every == 0 or done == iterations
                if done % run.checkpoint_every == 0 or keep:
                    save_checkpoint(run_dir, last, done, keep=keep)
                    saved = done
            if bar is not None:
                bar.update(1)
                bar.set_postfix(_postfix(metrics), refresh=False)
    except BaseException as exc:
        if bar is not None:
            bar.close()
            bar = None
        logger.close()
        sampler.close()
        _stop(
            exc,
            run_dir,
            last,
            saved,
            running,
            fresh=run.resume is None,
            config=config,
            keep_folder=existed,
        )
        raise
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        sampler.close()
        lock.release()
    return run_dir


def _restore(
    agent: MetaAgent, rng: np.random.Generator, path: Path, algo: str, device: torch.device
) -> int:
    """Load checkpoint ``path`` into ``agent`` and ``rng``; returns its iteration.

    Raises:
        RunError: a damaged checkpoint, one of another agent, or one with NaN or infinite
            weights (naming the kept checkpoints to go back to).
    """
    state = load_checkpoint(path, map_location=device)
    bad = nonfinite_tensors(state["agent"])
    if bad:
        kept = [p.name for p in kept_checkpoints(path.parent.parent) if p.name != path.name]
        older = (
            f"copy an older kept one ({', '.join(kept[-3:])}) over {path} to resume from it"
            if kept
            else "no older kept checkpoint exists; start a new run"
        )
        raise RunError(
            f"cannot resume: checkpoint {path} holds NaN or infinite values "
            f"({', '.join(bad[:3])}); {older}"
        )
    try:
        agent.load_state_dict(state["agent"])
        restore_rng_state(rng, state["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise RunError(
            f"checkpoint {path} does not fit this {algo} run ({one_line(exc)}); "
            "it is damaged or from another run"
        ) from exc
    return int(state["iteration"])


# Failures that are the run's circumstances, not a bug: one line instead of a traceback.
_EXPECTED_FAILURES: tuple[type[BaseException], ...] = (MemoryError, OSError, RunError)


class _NonFiniteUpdate(ArithmeticError):
    """An iteration's update left NaN or infinite values in the agent's state."""


def _stop(
    exc: BaseException,
    run_dir: Path,
    last: Mapping[str, Any],
    saved: int,
    failed_in: int,
    *,
    fresh: bool,
    config: Any,
    keep_folder: bool = False,
) -> None:
    """Keep what a failed or interrupted run completed; raise (or print) one line about it.

    The last completed iteration is saved to ``latest.pt`` (never a kept one); a new run that
    completed nothing loses its folder, so the same command can be run again. Raises
    :class:`TrainingError` for expected failures; returns for others (a bug keeps its
    traceback, after a note on stderr).
    """
    from metarl.sampling import DivergedError, WorkerError

    done = int(last["iteration"])
    save_error: BaseException | None = None
    if done > saved:
        try:
            save_checkpoint(run_dir, last, done, keep=False)
            saved = done
        except BaseException as err:  # the first failure is the one to report; this is noted
            save_error = err
    kept = not (fresh and saved == 0)
    if kept:
        ckpt = Path(run_dir) / CHECKPOINT_DIR / LATEST
        where = f"{ckpt} keeps iteration {saved}"
        again = f"continue with --resume {run_dir}"
    else:
        _remove_run_dir(run_dir, keep_folder=keep_folder)
        what = "emptied" if keep_folder else "removed"
        where = f"nothing was completed, so {run_dir} was {what}"
        again = "run the same command again"
    if save_error is not None:
        where = f"saving iteration {done} failed too ({one_line(save_error)}); {where}"
    stopped = _stopped_by(exc)
    if stopped is not None:
        print(f"\n{stopped}: {where}; {again}", file=sys.stderr)
        return
    if isinstance(exc, DivergedError | _NonFiniteUpdate):
        names = [n for n in STEP_SIZES if hasattr(config, n)]
        lower = " or ".join(f"--{n.replace('_', '-')} (now {getattr(config, n):g})" for n in names)
        if lower:
            again = (
                f"continue with --resume {run_dir} and a lower {lower}"
                if kept
                else f"run again with a lower {lower}"
            )
        raise TrainingError(
            f"the policy diverged in iteration {failed_in} ({exc}); {where}; {again}"
        ) from exc
    if isinstance(exc, (WorkerError, *_EXPECTED_FAILURES)):
        raise TrainingError(
            f"iteration {failed_in} failed: {one_line(exc)}; {where}; {again}"
        ) from exc
    print(f"\ntraining failed in iteration {failed_in}: {where}; {again}", file=sys.stderr)


def _never_started(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what a new run writes before its first checkpoint."""
    run_dir = Path(run_dir)
    ours = {CONFIG_FILE, METRICS_FILE, LOCK_FILE, CHECKPOINT_DIR, "tb", WANDB_DIR}
    if not (run_dir / CONFIG_FILE).is_file() or not run_dir.is_dir():
        return False
    if any(p.name not in ours for p in run_dir.iterdir()):
        return False
    ckpt = run_dir / CHECKPOINT_DIR
    return not ckpt.exists() or not any(ckpt.glob("*.pt"))


def _remove_run_dir(run_dir: Path, keep_folder: bool = False) -> None:
    """Remove what a new run wrote (the folder too, unless it held something else or
    ``keep_folder``: the user made it for the run)."""

    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, METRICS_FILE, LOCK_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for name in (CHECKPOINT_DIR, "tb", WANDB_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    if keep_folder:
        return
    try:
        run_dir.rmdir()
    except OSError:
        pass  # not empty: it held the user's own files before


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    shown = {
        "pre": "meta/return_pre_adapt",
        "post": "meta/return_post_adapt",
        "steps/s": "time/env_steps_per_s",
    }
    return {short: f"{metrics[key]:.4g}" for short, key in shown.items() if key in metrics}
