"""Custom task samplers end to end: --tasks module:callable, opaque tasks, no dead run folders."""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metarl.agents import MAMLTRPOConfig
from metarl.cli import main
from metarl.evaluation import load_run
from metarl.launch import launch
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import InlineSampler
from metarl.tasks import SetTaskEnvSampler, Task
from metarl.train import RunArgs

TASKS_MODULE = """
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from metarl.tasks import SetTaskEnvSampler


class WeightedCheetah(HalfCheetahEnv):
    def set_task(self, task):
        self._forward_reward_weight = float(task["forward_reward_weight"])


class BrokenCheetah(WeightedCheetah):
    def step(self, action):
        raise RuntimeError("the simulator fell over")


def make_sampler():
    return SetTaskEnvSampler(
        lambda: WeightedCheetah(),
        sample_fn=lambda n, rng: [{"forward_reward_weight": w} for w in rng.uniform(0.5, 3, n)],
    )


def broken_sampler():
    return SetTaskEnvSampler(
        lambda: BrokenCheetah(), tasks=[{"forward_reward_weight": 1.0}], name="Broken"
    )


def not_a_sampler():
    return 42
"""

TRAIN = [
    "--iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "2",
    "--hidden-sizes", "8", "--horizon", "10", "--no-progress",
]  # fmt: skip


@pytest.fixture
def tasks_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real, importable module of task samplers (a new name per test: imports are cached)."""
    name = f"custom_tasks_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TASKS_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.slow
def test_a_tasks_run_trains_evaluates_renders_and_resumes(
    tasks_module: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    spec = f"{tasks_module}:make_sampler"
    assert main(["train", "maml-trpo", "--tasks", spec, "--run-dir", str(run_dir), *TRAIN]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    # A lambda factory: the run is named after the env's class, not "<lambda>".
    assert config["run"]["env"] == "WeightedCheetah" and config["run"]["tasks"] == spec
    assert config["family"]["tasks"] == spec

    run = load_run(run_dir)
    assert run.family.name == "WeightedCheetah" and run.family.horizon == 10
    eval_args = ["--num-tasks", "2", "--num-adapt-steps", "1", "--episodes-per-step", "2"]
    eval_args += ["--seeds", "0", "--no-baseline", "--no-progress"]
    assert main(["eval", str(run_dir), *eval_args]) == 0
    stem = "quick_num-tasks=2_num-adapt-steps=1_episodes-per-step=2_seeds=0_no-baseline"
    rows = list(csv.DictReader((run_dir / "eval" / f"{stem}.csv").open()))
    assert [r["step"] for r in rows] == ["0", "1"]

    video = tmp_path / "adapt.mp4"
    render_args = ["--num-adapt-steps", "1", "--episodes-per-step", "2", "--width", "32"]
    render_args += ["--height", "32", "--no-progress", "--out", str(video)]
    assert main(["render", str(run_dir), *render_args]) == 0
    reader = imageio.get_reader(video, format="FFMPEG")
    try:
        frames = np.stack(list(reader.iter_data()))
    finally:
        reader.close()
    # Two panels (before and after one step) of one 10-step episode, under their labels.
    assert frames.shape[0] == 10 and frames.shape[2:] == (64, 3) and frames.std() > 0

    resume = ["train", "maml-trpo", "--resume", str(run_dir), "--iterations", "2"]
    assert main([*resume, "--no-progress"]) == 0
    with (run_dir / "metrics.csv").open() as f:
        assert [r["iteration"] for r in csv.DictReader(f)] == ["0", "1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:make", "module 'no_such_module_xyz' does not import"),
        ("{module}:missing", "has no 'missing'"),
        ("{module}:not_a_sampler", "not_a_sampler() returned a int, not a task sampler"),
        ("{module}", "must be module:callable"),
    ],
    ids=["no-module", "no-attribute", "no-sampler", "no-colon"],
)
def test_bad_tasks_specs_fail_before_any_work(
    tasks_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    run_dir = tmp_path / "run"
    code = main(["train", "maml-trpo", "--tasks", spec.format(module=tasks_module),
                 "--run-dir", str(run_dir)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not run_dir.exists()


def test_a_run_that_fails_in_its_first_iteration_leaves_no_folder(
    tasks_module: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config = MAMLTRPOConfig(iterations=1, meta_batch_size=1, episodes_per_task=1, hidden_sizes=(8,))
    broken = RunArgs(tasks=f"{tasks_module}:broken_sampler", horizon=5, run_dir=run_dir,
                     progress=False)  # fmt: skip
    with pytest.raises(RuntimeError, match="the simulator fell over"):
        launch("maml-trpo", broken, config)
    assert not run_dir.exists()
    # An empty folder given by the user is left, empty; the same command can run again.
    run_dir.mkdir()
    with pytest.raises(RuntimeError, match="the simulator fell over"):
        launch("maml-trpo", broken, config)
    assert run_dir.is_dir() and not any(run_dir.iterdir())
    good = RunArgs(tasks=f"{tasks_module}:make_sampler", horizon=5, run_dir=run_dir, progress=False)
    assert launch("maml-trpo", good, config) == run_dir
    assert (run_dir / "checkpoints" / "latest.pt").exists()


@dataclass(frozen=True)
class Goal:
    """A user's task object: not a mapping."""

    weight: float


class GoalCheetah(HalfCheetahEnv):
    """HalfCheetah whose task is a :class:`Goal`; it keeps the object it was given."""

    def set_task(self, task: Any) -> None:
        if not isinstance(task, Goal):
            raise TypeError(f"GoalCheetah.set_task takes a Goal, got {task!r}")
        self.goal = task
        self._forward_reward_weight = task.weight


def test_opaque_tasks_are_referred_to_by_index_and_handed_over_unchanged() -> None:
    goals = [Goal(0.5), Goal(2.0), Goal(3.0)]
    sampler = SetTaskEnvSampler(GoalCheetah, tasks=goals, max_envs=2)
    tasks = sampler.sample(2, np.random.default_rng(0))
    assert all(set(t) == {"index"} for t in tasks)
    env = sampler.make_env(tasks[0])
    assert env.unwrapped.goal is goals[int(tasks[0]["index"])]  # type: ignore[attr-defined]
    assert sampler.task_object(Task(index=2)) is goals[2]
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,))
    with InlineSampler(sampler, policy, horizon=5) as inline:
        batch = inline.sample([Task(index=0), Task(index=2)], 2, seed=0)
        assert batch.valid.all() and batch.tasks == [Task(index=0), Task(index=2)]
        with pytest.raises(ValueError, match=r"task 0 is a \S*test_custom_samplers\.Goal, not a"):
            inline.sample([Goal(0.5)], 1, seed=0)  # type: ignore[list-item]
        with pytest.raises(
            ValueError, match=r"Task\(index=i\) with 0 <= i < 3; got Task\(index=7\)"
        ):
            inline.sample([Task(index=7)], 1, seed=0)


def test_wrong_task_types_name_the_class_with_its_module() -> None:
    with pytest.raises(TypeError, match=r"task 0 is a \S*test_custom_samplers\.Goal; tasks are"):
        SetTaskEnvSampler(GoalCheetah, sample_fn=lambda n, rng: [Goal(1.0)] * n)
    with pytest.raises(TypeError, match=r"task 1 is a mapping while task 0 is a \S*\.Goal"):
        SetTaskEnvSampler(GoalCheetah, tasks=[Goal(1.0), {"weight": 1.0}])
