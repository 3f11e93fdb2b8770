"""``train(agent, tasks, run)`` takes objects; ``metarl.launch`` is where names become them."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metarl.agents.maml_trpo import MAMLTRPOConfig
from metarl.launch import launch, make_agent
from metarl.registry import make_family
from metarl.runs import RunError, latest_checkpoint, load_checkpoint
from metarl.train import RunArgs, train

H = 8
TINY = MAMLTRPOConfig(
    iterations=2, meta_batch_size=2, episodes_per_task=2, hidden_sizes=(8,), cpu_chunk_steps=64
)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)
        ]


def _policy(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(run_dir))["agent"]["policy"]


def _objects(seed: int = 0, config: MAMLTRPOConfig = TINY):
    family = make_family("Point2DNav", horizon=H)
    return make_agent("maml-trpo", config, family, seed=seed), family


def test_objects_train_exactly_as_names_do(tmp_path: Path) -> None:
    by_name = launch(
        "maml-trpo",
        RunArgs(env="Point2DNav", horizon=H, run_dir=tmp_path / "a", progress=False),
        TINY,
    )
    agent, family = _objects()
    by_object = train(agent, family, RunArgs(run_dir=tmp_path / "b", progress=False))
    assert _rows(by_name) == _rows(by_object)
    a, b = _policy(by_name), _policy(by_object)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((by_object / "config.json").read_text())
    # The family object names the run: eval and render rebuild it from config.json.
    assert saved["run"]["env"] == "Point2DNav" and saved["run"]["horizon"] == H
    assert saved["algo"] == "maml-trpo"


def test_a_preset_name_builds_the_presets_config() -> None:
    family = make_family("Point2DNav")
    agent = make_agent("maml-trpo", "quick", family)
    assert agent.config == type(agent).preset("quick", "Point2DNav")


def test_objects_resume_and_may_extend_the_iterations(tmp_path: Path) -> None:
    agent, family = _objects()
    straight = train(agent, family, RunArgs(run_dir=tmp_path / "a", progress=False))
    agent, family = _objects(config=replace(TINY, iterations=1))
    run_dir = train(agent, family, RunArgs(run_dir=tmp_path / "b", progress=False))
    # Built with another seed: the checkpoint's state replaces the initialization.
    agent, family = _objects(seed=5)
    train(agent, family, RunArgs(resume=run_dir, progress=False))
    assert _rows(straight) == _rows(run_dir)
    a, b = _policy(straight), _policy(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumes = json.loads((run_dir / "config.json").read_text())["resumes"]
    assert resumes == [{"iteration": 1, "changed": {"iterations": [1, 2]}}]


def test_a_resume_refuses_another_config_agent_or_family(tmp_path: Path) -> None:
    agent, family = _objects(config=replace(TINY, iterations=1))
    run_dir = train(agent, family, RunArgs(run_dir=tmp_path / "run", progress=False))
    agent, family = _objects(config=replace(TINY, meta_batch_size=3))
    with pytest.raises(RunError, match="meta_batch_size=3 differs from the run's 2"):
        train(agent, family, RunArgs(resume=run_dir, progress=False))
    other = make_family("HalfCheetahVel", horizon=H)
    agent = make_agent("maml-trpo", TINY, other)
    with pytest.raises(RunError, match="trains 'Point2DNav', but the tasks are 'HalfCheetahVel'"):
        train(agent, other, RunArgs(resume=run_dir, progress=False))
    rl2 = make_agent("rl2-ppo", "quick", family)
    with pytest.raises(RunError, match="was made by 'maml-trpo', not 'rl2-ppo'"):
        train(rl2, family, RunArgs(resume=run_dir, progress=False))


def test_wrong_objects_are_one_line_errors(tmp_path: Path) -> None:
    agent, family = _objects()
    with pytest.raises(TypeError, match=r"agent must be a metarl\.agent\.MetaAgent"):
        train("maml-trpo", family, RunArgs(run_dir=tmp_path / "a"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"tasks must be a task family .* got builtins\.str"):
        train(agent, "Point2DNav", RunArgs(run_dir=tmp_path / "b"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RunArgs\.horizon is 5 but the family's is 8"):
        train(agent, family, RunArgs(run_dir=tmp_path / "c", horizon=5))
    with pytest.raises(RunError, match=r"RunArgs\.env is 'AntDir', but the tasks are 'Point2DNav'"):
        train(agent, family, RunArgs(run_dir=tmp_path / "d", env="AntDir"))
    assert not any((tmp_path / n).exists() for n in "abcd")
