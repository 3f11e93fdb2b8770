"""metarl.load: a run folder's agent adapts on episodes it collects and acts on observations;
the README's Python example runs as written (on a freshly trained run)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import metarl
from metarl.agents import MAMLTRPO, RL2PPO
from metarl.launch import launch
from metarl.train import RunArgs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = replace(
        MAMLTRPO.preset("quick", "Point2DNav"), meta_batch_size=2, episodes_per_task=2, iterations=1
    )
    out = tmp_path_factory.mktemp("api") / "run"
    run = RunArgs(env="Point2DNav", variant="maml-rllab", run_dir=out, progress=False)
    return launch("maml-trpo", run, config)


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (example,) = [b for b in blocks if "metarl.load(" in b]
    return example


def test_readme_python_example_runs(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = re.sub(r'metarl\.load\("[^"]*"\)', f"metarl.load({str(run_dir)!r})", readme_example())
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "maml-trpo Point2DNav 0.1"
    assert [line.split(":")[0] for line in lines[1:]] == ["step 0", "step 1"]


def test_load_gives_the_agent_and_predict_follows_the_adapted_policy(run_dir: Path) -> None:
    model = metarl.load(run_dir)
    assert model.algo == "maml-trpo" and model.config.meta_batch_size == 2
    assert model.run.iteration == 1
    task = model.test_tasks()[0]
    before = model.exploration_policy()
    episodes = model.collect(task, before, num_episodes=4, seed=0)
    assert episodes.returns.shape == (4,)
    after = model.adapt(before, episodes)
    obs = np.stack([model.make_env(task).reset(seed=s)[0] for s in range(3)])
    with torch.no_grad():
        mean, _ = model.policy(torch.as_tensor(obs, dtype=torch.float32))
    low, high = model.family.action_space.low, model.family.action_space.high
    np.testing.assert_allclose(model.predict(obs), np.clip(mean.numpy(), low, high), rtol=1e-6)
    adapted = model.predict(obs, after)
    assert not np.allclose(adapted, model.predict(obs)), "adaptation left the actions unchanged"
    np.testing.assert_allclose(model.predict(obs[1], after), adapted[1], rtol=1e-5)
    a = model.predict(obs, after, deterministic=False, rng=np.random.default_rng(5))
    b = model.predict(obs, after, deterministic=False, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, adapted) and (a >= low).all() and (a <= high).all()
    # The episodes collected after adapting are those of the adapted policy.
    again = model.collect(task, after, num_episodes=4, seed=0)
    assert not torch.equal(again.returns, episodes.returns)


def test_rl2_says_how_it_adapts(tmp_path: Path) -> None:
    config = replace(
        RL2PPO.preset("quick", "Point2DNav"),
        meta_batch_size=2,
        episodes_per_trial=2,
        update_epochs=1,
        num_minibatches=1,
        hidden_size=8,
        iterations=1,
    )
    run = RunArgs(env="Point2DNav", horizon=5, run_dir=tmp_path / "rl2", progress=False)
    model = metarl.load(launch("rl2-ppo", run, config))
    assert model.algo == "rl2-ppo" and model.config.hidden_size == 8
    with pytest.raises(ValueError, match="recurrent state within a trial"):
        model.predict(np.zeros(model.family.observation_space.shape))
