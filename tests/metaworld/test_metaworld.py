"""Meta-World's ML1 / ML10 / ML45 families on real Meta-World (run in .venv-mujoco33)."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "metaworld", reason="Meta-World is not installed here (make test-mujoco33 runs these tests)"
)

from metarl.cli import main
from metarl.envs import make_family
from metarl.evaluation import evaluate_run, load_run, make_protocol, write_eval
from metarl.launch import launch
from metarl.plots import plot_adaptation
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import EpisodeBatch, InlineSampler, column_rngs
from metarl.tasks import Task
from metarl.train import RunArgs

H = 30


@pytest.fixture(scope="module")
def reach():
    return make_family("ML1-reach-v3")


def assert_same_bits(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name
    assert torch.equal(a.info["success"], b.info["success"])


def test_ml1_tasks_are_small_seeded_mappings(reach) -> None:
    assert reach.name == "ML1-reach-v3" and reach.horizon == 500
    tasks = reach.sample_tasks(5, np.random.default_rng(3))
    assert tasks == reach.sample_tasks(5, np.random.default_rng(3))
    assert tasks != reach.sample_tasks(5, np.random.default_rng(4))
    task = tasks[0]
    assert set(task) == {"benchmark", "env_name", "split", "index"}
    assert task["benchmark"] == "ML1" and task["split"] == "train"
    assert pickle.loads(pickle.dumps(task)) == task
    assert Task.from_json(task.to_json()) == task and Task.from_json(task.to_json()).id == task.id
    assert "env_name='reach-v3'" in repr(task)
    split = reach.task_split()
    assert (len(split.train), len(split.test)) == (50, 50)
    assert {t["split"] for t in split.test} == {"test"}


def test_unknown_ml1_env_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"unknown Meta-World env 'reach-v33'.*Did you mean reach-v3"
    ):
        make_family("ML1-reach-v33")
    with pytest.raises(ValueError, match=r"index must be in \[0, 50\)"):
        make_family("ML1-reach-v3").validate_task(
            {"benchmark": "ML1", "env_name": "reach-v3", "split": "test", "index": 50}
        )


def test_a_task_stays_set_across_resets(reach) -> None:
    """Meta-World's benchmark wrappers draw a new goal on every reset; these envs do not."""
    train = reach.task_split().train
    env = reach.make_env(train[0])
    goals = []
    for seed in range(3):
        env.reset(seed=seed)
        goals.append(env.unwrapped._target_pos.copy())
    assert all(np.array_equal(goals[0], g) for g in goals)
    assert reach.retask(env, train[1])
    env.reset(seed=0)
    assert not np.array_equal(env.unwrapped._target_pos, goals[0])
    fresh = reach.make_env(train[1])
    fresh.reset(seed=0)
    assert np.array_equal(env.unwrapped._target_pos, fresh.unwrapped._target_pos)


def test_pooled_envs_give_the_bits_of_fresh_envs_and_the_envs_success() -> None:
    pooled_family = make_family("ML1-reach-v3", horizon=H)
    pooled_family.max_envs = 2
    policy = GaussianMLPPolicy(39, 4, hidden_sizes=(16,), init_std=1.0)
    rng = np.random.default_rng(0)
    with InlineSampler(pooled_family, policy) as pooled:
        for seed in range(2):
            tasks = pooled_family.sample_tasks(3, rng)
            got = pooled.sample(tasks, 2, seed=seed)
            with InlineSampler(make_family("ML1-reach-v3", horizon=H), policy) as fresh:
                assert_same_bits(got, fresh.sample(tasks, 2, seed=seed))
            assert len(pooled.worker._pool.envs) == 2  # type: ignore[union-attr]
    # The batch's success is what the env says when the recorded actions are replayed.
    env = pooled_family.make_env(tasks[2])
    env.reset(seed=int(column_rngs(1, [5])[1][0].integers(2**31)))
    replay = [env.step(np.clip(a, -1, 1))[4]["success"] for a in got.actions[:, 5].numpy()]
    assert got.info["success"][:, 5].tolist() == [float(s) for s in replay]


def test_memory_stays_flat_over_batches() -> None:
    family = make_family("ML1-reach-v3", horizon=10)
    family.max_envs = 4
    policy = GaussianMLPPolicy(39, 4, hidden_sizes=(16,))
    rng = np.random.default_rng(1)

    def rss_mib() -> float:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    with InlineSampler(family, policy) as sampler:
        sizes = []
        for seed in range(6):
            sampler.sample(family.sample_tasks(8, rng), 2, seed=seed)
            sizes.append(rss_mib())
    # 16 columns on a pool of 4 envs (~20 MiB each): no growth after the pool is built.
    assert sizes[-1] - sizes[1] < 15, sizes


def test_success_reaches_metrics_and_eval(tmp_path: Path) -> None:
    from metarl.agents import MAMLTRPOConfig

    config = MAMLTRPOConfig(iterations=2, meta_batch_size=2, episodes_per_task=2, hidden_sizes=(8,))
    run_dir = launch(
        "maml-trpo",
        RunArgs(env="ML1-reach-v3", horizon=H, run_dir=tmp_path / "run", progress=False),
        config,
    )
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for key in ("meta/success_pre_adapt", "meta/success_post_adapt"):
        assert all(0.0 <= float(r[key]) <= 1.0 for r in rows)
    run = load_run(run_dir)
    protocol = make_protocol(
        "quick", run.family.name, num_tasks=2, num_steps=1, episodes_per_step=2, seeds=[0]
    )
    result = evaluate_run(run, protocol, baseline_tasks=0)
    assert result.success is not None and result.success.shape == (1, 2, 2)
    assert ((result.success >= 0) & (result.success <= 1)).all()
    paths = write_eval(result, tmp_path / "eval")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["step"] for r in rows if r["curve"] == "agent-success-rate"] == ["0", "1"]
    assert json.loads(paths["json"].read_text())["success"] == result.success.tolist()
    assert plot_adaptation([result], tmp_path / "eval" / "quick.png").stat().st_size > 0


def test_cli_rejects_an_unknown_ml1_env_before_any_work(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "never"
    code = main(["train", "maml-trpo", "--env", "ML1-rech-v3", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown Meta-World env 'rech-v3'" in err and len(err.splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_ml1_script_trains_end_to_end(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    run_dir = tmp_path / "run"
    tiny = ["--meta-batch-size", "2", "--episodes-per-task", "1", "--hidden-sizes", "8"]
    proc = subprocess.run(
        [sys.executable, str(root / "experiments" / "metaworld_ml1.py"), "--env", "ML1-push-v3",
         "--iterations", "1", "--horizon", "4", "--run-dir", str(run_dir), "--no-progress",
         *tiny],
        capture_output=True, text=True, cwd=root, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["family"] == {"name": "ML1-push-v3", "variant": "v3", "horizon": 4}


@pytest.mark.slow
def test_ml10_samples_its_train_envs_and_holds_out_five() -> None:
    """Meta-World builds ML10's 750 tasks in about 10 s: one test covers the multi-env family."""
    ml10 = make_family("ML10", horizon=10)
    split = ml10.task_split()
    assert (len(split.train), len(split.test)) == (500, 250)
    # Test tasks are interleaved over the held-out envs: the first five are five envs.
    assert len({t["env_name"] for t in split.test[:5]}) == 5
    assert not {t["env_name"] for t in split.train} & {t["env_name"] for t in split.test}
    tasks = split.test[:4]
    ml10.max_envs = 4
    policy = GaussianMLPPolicy(39, 4, hidden_sizes=(8,))
    with InlineSampler(ml10, policy) as pooled:
        got = pooled.sample(tasks, 2, seed=0)
        assert len(pooled.worker._pool.envs) == 4  # type: ignore[union-attr]
    with InlineSampler(make_family("ML10", horizon=10), policy) as fresh:
        assert_same_bits(got, fresh.sample(tasks, 2, seed=0))
    env = ml10.make_env(split.test[0])
    assert not ml10.retask(env, split.test[1])  # another env class: the pool builds a new env
