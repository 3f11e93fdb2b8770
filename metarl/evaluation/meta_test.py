"""Evaluating a run: the adaptation curves of its agent on held-out tasks beside the baseline
and the published numbers (:class:`EvalResult`), its table, and its CSV / JSON files."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metarl.evaluation.baseline import sb3_baseline
from metarl.evaluation.loading import LoadedRun
from metarl.evaluation.protocol import (
    BASELINE_EPISODES,
    BASELINE_TASKS,
    Protocol,
    held_out_tasks,
    steps_per_adaptation,
)
from metarl.evaluation.published import PublishedCurve, published_reference
from metarl.evaluation.statistics import Summary, summarize, summarize_with_divergence
from metarl.progress import progress_bar
from metarl.runs import write_atomically
from metarl.tasks import Task

EVAL_DIR = "eval"
"""The folder of a run that its evaluations go to."""


CSV_COLUMNS = (
    "run",
    "algo",
    "family",
    "variant",
    "horizon",
    "protocol",
    "curve",
    "step",
    "label",
    "mean",
    "ci_low",
    "ci_high",
    "std",
    "n",
    "env_steps",
    "diverged",
)
"""Columns of ``eval/<name>.csv``: one row per curve (agent, baseline, published) and step;
``env_steps`` is the adaptation budget spent before that step's episodes, per task;
``diverged`` counts the ``n`` (task, seed) values that diverged (then ``mean`` and the interval
are NaN)."""


@dataclass
class EvalResult:
    """The meta-test of one run.

    Attributes:
        run, algo, family, variant, horizon: what was evaluated.
        protocol: how.
        iteration: meta-iterations of the evaluated checkpoint.
        checkpoint: its file.
        recurrent: True for RL^2 (step s is episode s + 1 of a trial).
        tasks: the held-out tasks.
        returns: ``[seeds, num_steps + 1, tasks]`` mean return per seed, step and task (NaN
            where the task's episodes diverged at that step or before).
        success: ``[seeds, num_steps + 1, tasks]`` fraction of episodes that succeeded, where
            the env reports success (Meta-World's ``info["success"]``), else None (NaN where
            the task diverged).
        steps_per_step: env steps of adaptation budget per step and task.
        baseline: ``[baseline tasks, num_steps + 1]`` SB3 PPO returns, or None.
        baseline_tasks: the tasks the baseline learned.
        reference: the matching published curve, or None.
    """

    run: str
    algo: str
    family: str
    variant: str
    horizon: int
    protocol: Protocol
    iteration: int
    checkpoint: str
    recurrent: bool
    tasks: list[Task]
    returns: np.ndarray
    steps_per_step: int
    baseline: np.ndarray | None = None
    baseline_tasks: list[Task] = field(default_factory=list)
    reference: PublishedCurve | None = None
    success: np.ndarray | None = None

    def step_label(self, step: int) -> str:
        """``"step 2"`` (gradient agents) or ``"episode 3"`` (RL^2)."""
        return f"episode {step + 1}" if self.recurrent else f"step {step}"

    def summaries(self) -> list[Summary]:
        """Per adaptation step, over tasks x seeds (NaN, with the count, where any diverged)."""
        return [
            summarize_with_divergence(self.returns[:, s, :]) for s in range(self.returns.shape[1])
        ]

    def diverged(self) -> list[int]:
        """Per adaptation step, how many (task, seed) values diverged."""
        return [
            int(np.count_nonzero(~np.isfinite(self.returns[:, s, :])))
            for s in range(self.returns.shape[1])
        ]

    def success_summaries(self) -> list[Summary]:
        """Success rate per adaptation step, over tasks x seeds ([] without success info)."""
        if self.success is None:
            return []
        return [summarize(self.success[:, s, :]) for s in range(self.success.shape[1])]

    def baseline_summaries(self) -> list[Summary]:
        """Per step, over the baseline's tasks ([] without a baseline)."""
        if self.baseline is None:
            return []
        return [summarize(self.baseline[:, s]) for s in range(self.baseline.shape[1])]

    def rows(self) -> list[dict[str, Any]]:
        """The CSV rows (:data:`CSV_COLUMNS`)."""
        common = {
            "run": self.run,
            "algo": self.algo,
            "family": self.family,
            "variant": self.variant,
            "horizon": self.horizon,
            "protocol": self.protocol.name,
        }
        rows = []
        curves: list[tuple[str, list[Summary]]] = [("agent", self.summaries())]
        if self.success is not None:
            curves.append(("agent-success-rate", self.success_summaries()))
        if self.baseline is not None:
            curves.append(("sb3-ppo-scratch", self.baseline_summaries()))
        for curve, summaries in curves:
            for s, summ in enumerate(summaries):
                rows.append(
                    {
                        **common,
                        "curve": curve,
                        "step": s,
                        "label": self.step_label(s),
                        "mean": summ.mean,
                        "ci_low": summ.ci_low,
                        "ci_high": summ.ci_high,
                        "std": summ.std,
                        "n": summ.n,
                        "env_steps": s * self.steps_per_step,
                        "diverged": summ.diverged,
                    }
                )
        if self.reference is not None:
            k = min(len(self.reference.returns), self.protocol.num_steps + 1)
            for s, value in enumerate(self.reference.returns[:k]):
                rows.append(
                    {
                        **common,
                        "curve": "published-maml-trpo",
                        "step": s,
                        "label": f"step {s}",
                        "mean": value,
                        "ci_low": "",
                        "ci_high": "",
                        "std": "",
                        "n": self.reference.num_tasks,
                        "env_steps": s * self.reference.episodes_per_step * self.horizon,
                        "diverged": "",
                    }
                )
        return rows

    def to_json(self) -> dict[str, Any]:
        """Everything, raw values included (``returns[seed][step][task]``)."""
        return {
            "run": self.run,
            "algo": self.algo,
            "family": self.family,
            "variant": self.variant,
            "horizon": self.horizon,
            "iteration": self.iteration,
            "checkpoint": self.checkpoint,
            "recurrent": self.recurrent,
            "protocol": asdict(self.protocol),
            "steps_per_step": self.steps_per_step,
            "tasks": [t.to_dict() for t in self.tasks],
            # Diverged values are null (JSON has no NaN); from_json reads them back as NaN.
            "returns": _nan_to_none(self.returns.tolist()),
            "diverged": self.diverged(),
            "success": None if self.success is None else _nan_to_none(self.success.tolist()),
            "baseline": None
            if self.baseline is None
            else {
                "algorithm": "stable-baselines3 PPO('MlpPolicy'), one update per step",
                "tasks": [t.to_dict() for t in self.baseline_tasks],
                "returns": self.baseline.tolist(),
            },
            "reference": None if self.reference is None else asdict(self.reference),
            "rows": _nan_to_none(self.rows()),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_json`."""
        proto = dict(data["protocol"])
        proto["seeds"] = tuple(proto["seeds"])
        if proto.get("step_sizes") is not None:
            proto["step_sizes"] = tuple(proto["step_sizes"])
        base = data.get("baseline")
        ref = data.get("reference")
        return cls(
            run=data["run"],
            algo=data["algo"],
            family=data["family"],
            variant=data["variant"],
            horizon=int(data["horizon"]),
            protocol=Protocol(**proto),
            iteration=int(data["iteration"]),
            checkpoint=data["checkpoint"],
            recurrent=bool(data["recurrent"]),
            tasks=[Task(t) for t in data["tasks"]],
            returns=np.asarray(data["returns"], dtype=np.float64),
            steps_per_step=int(data["steps_per_step"]),
            baseline=None if base is None else np.asarray(base["returns"], dtype=np.float64),
            baseline_tasks=[] if base is None else [Task(t) for t in base["tasks"]],
            reference=None if ref is None else _published_from_json(ref),
            success=None
            if data.get("success") is None
            else np.asarray(data["success"], dtype=np.float64),
        )


def _nan_to_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in lists and dicts) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return value


def _published_from_json(data: dict[str, Any]) -> PublishedCurve:
    return PublishedCurve(
        returns=tuple(float(v) for v in data["returns"]),
        # Results written before the curves named several variants carry one.
        variants=tuple(str(v) for v in data.get("variants", [data.get("variant")])),
        horizon=int(data["horizon"]),
        episodes_per_step=int(data["episodes_per_step"]),
        num_tasks=int(data["num_tasks"]),
        step_sizes=tuple(float(v) for v in data["step_sizes"]),
        source=str(data["source"]),
    )


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check a file can be written there.

    Raises:
        ValueError: naming the folder and the reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write to {folder}: {exc.strerror or exc}") from exc


def evaluate_run(
    run: LoadedRun,
    protocol: Protocol,
    baseline_tasks: int = BASELINE_TASKS,
    baseline_eval_episodes: int = BASELINE_EPISODES,
    backend: str = "inline",
    num_workers: int = 1,
    progress: bool = False,
) -> EvalResult:
    """Run the meta-test ``protocol`` on ``run`` (and the SB3 baseline on ``baseline_tasks``).

    Args:
        run: from :func:`load_run`.
        protocol: from :func:`make_protocol`.
        baseline_tasks: held-out tasks the from-scratch PPO learns (0: no baseline).
        baseline_eval_episodes: episodes per baseline evaluation.
        backend, num_workers: the sampler (see :func:`metarl.train.make_sampler`).
        progress: show progress bars: the agent's episodes (every task, adaptation step and
            seed), then the baseline's tasks.
    """
    from metarl.family import FamilyTaskSampler
    from metarl.sampling import make_sampler

    agent, family = run.agent, run.family
    tasks = held_out_tasks(family, protocol)
    if baseline_tasks < 0:
        raise ValueError(f"baseline_tasks must be >= 0, got {baseline_tasks}")
    if baseline_tasks > len(tasks):
        raise ValueError(
            f"baseline_tasks={baseline_tasks} exceeds the protocol's {len(tasks)} held-out tasks"
        )
    step_sizes = list(protocol.step_sizes) if protocol.step_sizes is not None else None
    if not agent.takes_step_size:
        step_sizes = None  # Reptile adapts with its own optimizer, RL^2 in its hidden state
    per_step = steps_per_adaptation(agent, protocol, family.horizon)
    # Every agent plays episodes_per_step episodes (RL^2: trials of num_steps + 1 episodes)
    # per task and adaptation step.
    episodes = len(protocol.seeds) * len(tasks) * (protocol.num_steps + 1)
    episodes *= protocol.episodes_per_step
    bar = progress_bar(progress, episodes, f"eval {run.name}", "episode")
    sampler: Any = make_sampler(FamilyTaskSampler(family), agent.policy, backend, num_workers)
    if bar is not None:
        sampler = _CountingSampler(sampler, bar.update)
    try:
        curves, success = [], []
        for seed in protocol.seeds:
            measured = agent.adaptation_curves(
                sampler,
                tasks,
                protocol.num_steps,
                protocol.episodes_per_step,
                int(seed),
                step_sizes=step_sizes,
            )
            curves.append(measured["return"])
            if "success" in measured:
                success.append(measured["success"])
    finally:
        sampler.close()
        if bar is not None:
            bar.close()
    baseline = None
    if baseline_tasks > 0:
        bar = progress_bar(progress, baseline_tasks, "sb3-ppo-scratch", "task")
        try:
            baseline = sb3_baseline(
                family,
                tasks[:baseline_tasks],
                protocol.num_steps,
                per_step,
                baseline_eval_episodes,
                int(protocol.seeds[0]),
                progress=None if bar is None else bar.update,
            )
        finally:
            if bar is not None:
                bar.close()
    return EvalResult(
        run=run.name,
        algo=run.algo,
        family=family.name,
        variant=family.variant,
        horizon=family.horizon,
        protocol=protocol,
        iteration=run.iteration,
        checkpoint=str(run.checkpoint),
        recurrent=agent.recurrent,
        tasks=tasks,
        returns=np.stack(curves),
        steps_per_step=per_step,
        baseline=baseline,
        baseline_tasks=list(tasks[:baseline_tasks]),
        reference=published_reference(family.name, family.variant, family.horizon, protocol),
        success=np.stack(success) if success else None,
    )


class _CountingSampler:
    """A sampler that reports how many episodes each of its batches held (for a progress bar).

    The agents' meta-test samples one batch per adaptation step (RL^2: one batch of whole
    trials), so the bar moves with every batch, not once per seed. Everything but
    :meth:`sample` is the wrapped sampler's.
    """

    def __init__(self, sampler: Any, count: Callable[[int], object]) -> None:
        self._sampler = sampler
        self._count = count

    def sample(
        self,
        tasks: Sequence[Any],
        episodes_per_task: int,
        params: Any = None,
        *,
        seed: int,
        episodes_per_trial: int = 1,
    ) -> Any:
        batch = self._sampler.sample(
            tasks, episodes_per_task, params, seed=seed, episodes_per_trial=episodes_per_trial
        )
        self._count(len(tasks) * episodes_per_task * episodes_per_trial)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sampler, name)


def _cell(summary: Summary, width: int) -> str:
    """``mean [low, high]`` of one summary, padded to ``width`` (one value has no interval)."""
    if summary.diverged:
        return f"{'diverged':>9}  ({summary.diverged} of {summary.n} task-seed values)".ljust(width)
    interval = f"[{summary.ci_low:.2f}, {summary.ci_high:.2f}]" if summary.n > 1 else "(one value)"
    return f"{summary.mean:9.2f}  {interval:<20}".ljust(width)


def format_table(result: EvalResult) -> list[str]:
    """The lines ``metarl eval`` prints for one result: a header row, one row per adaptation
    step (the agent's mean return and 95% interval, the from-scratch baseline's, the published
    curve's and the success rate, where each exists), and a line saying what n is.

    A step where some (task, seed) values diverged shows how many instead of a mean.
    """
    width = 36
    agent = result.summaries()
    base = result.baseline_summaries()
    rates = result.success_summaries()
    ref = result.reference
    head = f"  {'step' if not result.recurrent else 'episode':<10} {'env steps':>9}  "
    head += f"{'agent':>9}  {'95% CI':<20}".ljust(width)
    if base:
        head += f"{'sb3-ppo-scratch':>9}  {'95% CI':<20}".ljust(width)
    if ref is not None:
        head += f"{'published':>9}  "
    if rates:
        head += f"{'success':>9}  95% CI"
    lines = [head.rstrip()]
    for s, summ in enumerate(agent):
        line = f"  {result.step_label(s):<10} {s * result.steps_per_step:>9}  " + _cell(summ, width)
        if base:
            line += _cell(base[s], width)
        if ref is not None:
            value = f"{ref.returns[s]:.1f}" if s < len(ref.returns) else ""
            line += f"{value:>9}  "
        if rates:
            rate = rates[s]
            line += f"{rate.mean:9.1%}  [{rate.ci_low:.1%}, {rate.ci_high:.1%}]"
        lines.append(line.rstrip())
    seeds, tasks = len(result.protocol.seeds), len(result.tasks)

    def count(n: int, what: str) -> str:
        return f"{n} {what}" + ("s" if n != 1 else "")

    note = f"  n = {seeds * tasks} ({count(tasks, 'task')} x {count(seeds, 'seed')})"
    if base:
        note += f", sb3-ppo-scratch n = {count(len(result.baseline_tasks), 'task')}"
    note += "; env steps per task before the step"
    if any(summ.diverged for summ in agent):
        note += "; diverged: non-finite actions, observations or rewards"
    lines.append(note)
    return lines


def write_eval(result: EvalResult, folder: Path, name: str | None = None) -> dict[str, Path]:
    """Write ``<name>.csv`` and ``<name>.json`` into ``folder`` (atomically).

    Args:
        result: from :func:`evaluate_run`.
        folder: where the files go (created if needed).
        name: the files' name, :func:`eval_name` of the evaluation's settings; default the
            protocol's name.

    Returns:
        ``{"csv": path, "json": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = result.protocol.name if name is None else name
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows())
    paths = {"csv": folder / f"{stem}.csv", "json": folder / f"{stem}.json"}
    text = json.dumps(result.to_json(), indent=2) + "\n"
    write_atomically(paths["csv"], lambda tmp: tmp.write_text(buf.getvalue()))
    write_atomically(paths["json"], lambda tmp: tmp.write_text(text))
    return paths


def eval_dir(run_dir: Path) -> Path:
    """Where a run's evaluations go: ``RUN_DIR/eval``."""
    return Path(run_dir) / EVAL_DIR
