"""Adaptation-curve figures (matplotlib, Agg backend, PNG).

One figure holds any number of evaluated runs: each run's mean return per adaptation step with
its 95% confidence band, its SB3 from-scratch baseline (dashed, same colour) and, where the
setting matches the paper, the published MAML-TRPO numbers as black crosses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metarl.evaluation import EvalResult
from metarl.runs import write_atomically

__all__ = ["plot_adaptation"]


def plot_adaptation(
    results: Sequence[EvalResult], path: str | Path, title: str | None = None
) -> Path:
    """Plot the adaptation curves of ``results`` on one figure and save it as PNG.

    The x axis is the adaptation step s (for RL^2: episode s + 1 of a trial); the y axis the
    mean return over held-out tasks and seeds.

    Args:
        results: one or more evaluations (see :func:`metarl.evaluation.evaluate_run`).
        path: the ``.png`` file to write (atomically; its folder must exist).
        title: figure title; default: the families and protocols shown.

    Returns:
        ``path``.

    Raises:
        ValueError: no results, or a path that does not end in ``.png``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_adaptation needs at least one evaluation")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the figure is written as PNG: give a path ending in .png, got {path}")
    with_success = any(r.success is not None for r in results)
    if with_success:
        fig, (ax, success_ax) = plt.subplots(1, 2, figsize=(12.0, 4.5), dpi=120)
    else:
        fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn_references: set[str] = set()
    drawn_baselines: set[tuple[object, ...]] = set()
    max_step = 0
    for i, result in enumerate(results):
        color = colors[i % len(colors)]
        summaries = result.summaries()
        steps = np.arange(len(summaries))
        max_step = max(max_step, len(summaries) - 1)
        mean = np.array([s.mean for s in summaries])
        low = np.array([s.ci_low for s in summaries])
        high = np.array([s.ci_high for s in summaries])
        label = f"{result.algo} ({result.run}, it {result.iteration})"
        ax.plot(steps, mean, "o-", color=color, label=label)
        ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        key = (
            result.family,
            result.variant,
            result.horizon,
            result.steps_per_step,
            None if result.baseline is None else result.baseline.tobytes(),
        )
        if result.baseline is not None and key not in drawn_baselines:
            drawn_baselines.add(key)
            base = result.baseline_summaries()
            b_mean = np.array([s.mean for s in base])
            ax.plot(
                steps,
                b_mean,
                "s--",
                color=color,
                alpha=0.8,
                label=f"SB3 PPO from scratch, {result.steps_per_step} env steps per step",
            )
            ax.fill_between(
                steps,
                [s.ci_low for s in base],
                [s.ci_high for s in base],
                color=color,
                alpha=0.08,
                linewidth=0,
            )
        ref = result.reference
        if ref is not None and result.family not in drawn_references:
            drawn_references.add(result.family)
            k = min(len(ref.returns), len(summaries))
            ax.plot(
                np.arange(k),
                ref.returns[:k],
                "kx",
                markersize=9,
                markeredgewidth=2,
                label=f"published MAML-TRPO ({result.family}, Finn et al. 2017)",
            )
    recurrent = any(r.recurrent for r in results)
    gradient = any(not r.recurrent for r in results)
    if recurrent and gradient:
        xlabel = "adaptation step s (RL^2: episode s + 1 of a trial)"
    elif recurrent:
        xlabel = "episode of the trial - 1"
    else:
        xlabel = "adaptation steps"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean return (95% CI over tasks x seeds)")
    ax.set_xticks(np.arange(max_step + 1))
    if title is None:
        families = sorted({r.family for r in results})
        protocols = sorted({r.protocol.name for r in results})
        title = f"meta-test on held-out tasks: {', '.join(families)} ({', '.join(protocols)})"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if with_success:
        _plot_success(success_ax, results, colors, xlabel, max_step)
    fig.tight_layout()
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def _plot_success(
    ax: Any, results: Sequence[EvalResult], colors: list[str], xlabel: str, max_step: int
) -> None:
    """The success rate per adaptation step with its 95% confidence band (runs that have it)."""
    for i, result in enumerate(results):
        summaries = result.success_summaries()
        if not summaries:
            continue
        color = colors[i % len(colors)]
        steps = np.arange(len(summaries))
        ax.plot(
            steps,
            [s.mean for s in summaries],
            "o-",
            color=color,
            label=f"{result.algo} ({result.run}, it {result.iteration})",
        )
        ax.fill_between(
            steps,
            [max(0.0, s.ci_low) for s in summaries],
            [min(1.0, s.ci_high) for s in summaries],
            color=color,
            alpha=0.2,
            linewidth=0,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success rate (95% CI over tasks x seeds)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(np.arange(max_step + 1))
    ax.set_title("episodes that succeeded (info['success'] at any step)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
