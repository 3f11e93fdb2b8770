"""Meta-test evaluation: how well and how fast a meta-trained agent adapts to held-out tasks.

The protocol (:class:`Protocol`) asks every agent the same question through
:meth:`metarl.agent.MetaAgent.adaptation_curve`: the mean return after 0..K adaptation steps
(MAML-TRPO, Reptile-PPO) or of episode 1..K+1 of a trial (RL^2), on the first ``num_tasks``
tasks of the family's held-out test split, once per seed. Each step is summarized over the
``tasks x seeds`` values by their mean and a Student-t 95% confidence interval.

The honest baseline (:func:`sb3_baseline`) gives Stable-Baselines3's PPO the same number of env
steps per adaptation step on the same held-out tasks, learning from scratch. The published
MAML-TRPO numbers (Finn et al. 2017, :data:`PUBLISHED_MAML_TRPO`) are attached where family,
variant, horizon and protocol match the paper's.

A run's evaluation lands in ``RUN_DIR/eval/<name>.{csv,json,png}``, the name saying the settings
that made it (:func:`eval_name`: ``quick``, ``quick_num-tasks=3_seeds=0``,
``paper_no-baseline``), so an evaluation with other settings never replaces another.
"""

from __future__ import annotations

from metarl.evaluation.baseline import sb3_baseline
from metarl.evaluation.loading import LoadedRun, load_run
from metarl.evaluation.meta_test import (
    CSV_COLUMNS,
    EVAL_DIR,
    EvalResult,
    check_writable,
    eval_dir,
    evaluate_run,
    format_table,
    write_eval,
)
from metarl.evaluation.protocol import (
    BASELINE_EPISODES,
    BASELINE_TASKS,
    PROTOCOLS,
    Protocol,
    eval_name,
    held_out_tasks,
    make_protocol,
    settings_name,
    steps_per_adaptation,
)
from metarl.evaluation.published import PUBLISHED_MAML_TRPO, PublishedCurve, published_reference
from metarl.evaluation.statistics import (
    Summary,
    student_t_quantile,
    summarize,
    summarize_with_divergence,
)

__all__ = [
    "BASELINE_EPISODES",
    "BASELINE_TASKS",
    "CSV_COLUMNS",
    "EVAL_DIR",
    "PROTOCOLS",
    "PUBLISHED_MAML_TRPO",
    "EvalResult",
    "LoadedRun",
    "Protocol",
    "PublishedCurve",
    "Summary",
    "check_writable",
    "eval_dir",
    "eval_name",
    "evaluate_run",
    "format_table",
    "held_out_tasks",
    "load_run",
    "make_protocol",
    "published_reference",
    "sb3_baseline",
    "settings_name",
    "steps_per_adaptation",
    "student_t_quantile",
    "summarize",
    "summarize_with_divergence",
    "write_eval",
]
