"""Tiny trained runs (real training, real checkpoints) shared by the evaluation tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metarl.launch import launch
from metarl.registry import agent_classes
from metarl.train import RunArgs

HORIZON = 10
"""Episode length of the tiny Point2DNav runs."""


def tiny_run(root: Path, algo: str, env: str = "Point2DNav", horizon: int = HORIZON) -> Path:
    """Train ``algo`` for 2 iterations on 2 tasks; returns the run folder."""
    cls = agent_classes()[algo]
    config = cls.preset("quick", env)
    small: dict[str, object] = {"iterations": 2, "meta_batch_size": 2}
    if hasattr(config, "episodes_per_task"):
        small["episodes_per_task"] = 2
    if hasattr(config, "num_minibatches"):
        small["num_minibatches"] = 1
    torch.manual_seed(0)
    run = RunArgs(env=env, horizon=horizon, seed=0, run_dir=root / f"{algo}-{env}", progress=False)
    return launch(algo, run, replace(config, **small))


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``runs(algo, env="Point2DNav", horizon=10)``: a tiny run, trained once per session."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[tuple[str, str, int], Path] = {}

    def get(algo: str, env: str = "Point2DNav", horizon: int = HORIZON) -> Path:
        key = (algo, env, horizon)
        if key not in made:
            made[key] = tiny_run(root, algo, env, horizon)
        return made[key]

    return get
