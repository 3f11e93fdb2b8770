"""MAML-TRPO end to end: learning on Point2DNav, exact resume, Ctrl-C, CLI errors, GPU."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metarl.agents import MAMLTRPO, MAMLTRPOConfig
from metarl.cli import main
from metarl.launch import launch
from metarl.runs import latest_checkpoint, load_checkpoint
from metarl.train import RunArgs

TINY = MAMLTRPOConfig(iterations=4, meta_batch_size=4, episodes_per_task=3, hidden_sizes=(16,))


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def untimed(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in table]


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(run_dir))["agent"]["policy"]


@pytest.mark.slow
def test_learns_to_adapt_on_point2d(tmp_path: Path) -> None:
    config = replace(MAMLTRPO.preset("quick", "Point2DNav"), iterations=25)
    run = launch(
        "maml-trpo",
        RunArgs(env="Point2DNav", seed=1, run_dir=tmp_path / "run", progress=False),
        config,
    )
    table = rows(run)
    assert len(table) == 25
    pre = [float(r["meta/return_pre_adapt"]) for r in table]
    post = [float(r["meta/return_post_adapt"]) for r in table]
    late_pre, late_post = sum(pre[-5:]) / 5, sum(post[-5:]) / 5
    # One gradient step clearly helps, and meta-training clearly helped both.
    assert late_post > late_pre + 8.0, (late_pre, late_post)
    assert late_post > post[0] + 50.0, (post[0], late_post)
    assert all(r["trpo/accepted"] == "1.0" for r in table[-5:])
    assert all(float(r["trpo/kl"]) <= TINY.max_kl * 1.0001 for r in table)


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = launch(
        "maml-trpo",
        RunArgs(
            env="Point2DNav", seed=3, run_dir=tmp_path / "a", progress=False, checkpoint_every=1
        ),
        TINY,
    )
    half = launch(
        "maml-trpo",
        RunArgs(
            env="Point2DNav", seed=3, run_dir=tmp_path / "b", progress=False, checkpoint_every=1
        ),
        TINY,
        iterations=2,
    )
    assert load_checkpoint(latest_checkpoint(half))["iteration"] == 2
    resumed = launch(
        "maml-trpo", RunArgs(env="Point2DNav", resume=half, progress=False), TINY, iterations=4
    )
    assert resumed == half
    assert untimed(rows(straight)) == untimed(rows(resumed))
    a, b = final_params(straight), final_params(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "metarl",
        "train",
        "maml-trpo",
        "--env",
        "Point2DNav",
        "--iterations",
        "1000",
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "2",
        "--checkpoint-every",
        "1000",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    # A shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that: give the run the default handler so Ctrl-C reaches it as in a terminal.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (run_dir / "metrics.csv").exists() and len(rows(run_dir)) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run logged no iteration within 120 s")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err
    state = load_checkpoint(latest_checkpoint(run_dir))
    done = int(state["iteration"])
    assert done >= 2
    # The CSV may hold one more row than the checkpoint (an iteration finished while the
    # signal arrived); resume drops it and continues from the checkpoint.
    assert (
        main(
            [
                "train",
                "maml-trpo",
                "--resume",
                str(run_dir),
                "--iterations",
                str(done + 1),
                "--no-progress",
            ]
        )
        == 0
    )
    assert [int(r["iteration"]) for r in rows(run_dir)] == list(range(done + 1))


def test_cli_errors_come_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "maml-trp"]) == 2
    assert "maml-trpo" in capsys.readouterr().err
    assert main(["train", "maml-trpo", "--env", "HalfCheetaVel"]) == 2
    assert "HalfCheetahVel" in capsys.readouterr().err
    assert main(["train", "maml-trpo", "--preset", "huge"]) == 2
    assert "quick" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert main(["train", "maml-trpo", "--max-kl", "0", "--run-dir", str(run_dir)]) == 2
    assert "max_kl" in capsys.readouterr().err
    assert not run_dir.exists()
    assert main(["train", "maml-trpo", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(
        json.dumps(
            {"format_version": 1, "algo": "reptile-ppo", "run": {"env": "Point2DNav"}, "config": {}}
        )
    )
    assert main(["train", "maml-trpo", "--resume", str(other)]) == 2
    assert "made by 'reptile-ppo'" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_resume_refuses_another_family(tmp_path: Path) -> None:
    run = launch(
        "maml-trpo",
        RunArgs(env="Point2DNav", run_dir=tmp_path / "run", progress=False),
        replace(TINY, iterations=1),
    )
    with pytest.raises(ValueError, match="trains 'Point2DNav', not 'HalfCheetahDir'"):
        launch("maml-trpo", RunArgs(env="HalfCheetahDir", resume=run, progress=False), TINY)


def test_run_folder_contents(tmp_path: Path) -> None:
    run = launch(
        "maml-trpo",
        RunArgs(env="Point2DNav", run_dir=tmp_path / "run", progress=False),
        replace(TINY, iterations=2),
    )
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "maml-trpo"
    assert config["config"]["max_kl"] == TINY.max_kl
    assert config["family"] == {"name": "Point2DNav", "variant": "maml", "horizon": 100}
    assert (run / "checkpoints" / "iter_000002.pt").exists()
    assert any((run / "tb").iterdir())
    header = rows(run)[0].keys()
    for key in (
        "meta/return_pre_adapt",
        "meta/return_post_adapt",
        "trpo/kl",
        "env_steps",
        "time/sampling",
        "time/optimization",
        "losses/surrogate_before",
    ):
        assert key in header


@pytest.mark.gpu
def test_trains_on_cuda(tmp_path: Path) -> None:
    run = launch(
        "maml-trpo",
        RunArgs(env="HalfCheetahVel", device="cuda", progress=False, run_dir=tmp_path / "run"),
        replace(TINY, iterations=2),
    )
    assert len(rows(run)) == 2
    params = final_params(run)
    assert all(torch.isfinite(v).all() for v in params.values())


def test_trains_on_a_custom_gymnasium_task_sampler(tmp_path: Path) -> None:
    from metarl.tasks import GymKwargsTaskSampler, Uniform

    sampler = GymKwargsTaskSampler("HalfCheetah-v5", {"ctrl_cost_weight": Uniform(0.05, 0.2)})
    run = launch(
        "maml-trpo",
        RunArgs(env="HalfCheetah-v5", horizon=20, run_dir=tmp_path / "run", progress=False),
        replace(TINY, iterations=2, meta_batch_size=2, episodes_per_task=2),
        task_sampler=sampler,
    )
    table = rows(run)
    # 2 tasks x 2 episodes x 20 steps, sampled before and after adaptation.
    assert [r["env_steps"] for r in table] == ["160.0", "160.0"]
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == {"name": "HalfCheetah-v5", "custom": True, "horizon": 20}
    with pytest.raises(ValueError, match=r"RunArgs\.env names it"):
        launch(
            "maml-trpo",
            RunArgs(env="Point2DNav", run_dir=tmp_path / "other", progress=False),
            TINY,
            task_sampler=sampler,
        )
    assert not (tmp_path / "other").exists()


def test_a_step_the_line_search_rejects_is_never_applied() -> None:
    import numpy as np

    from metarl.sampling import make_sampler
    from metarl.tasks import Choice, GymKwargsTaskSampler

    # Every reward is exactly zero, so no step can lower the loss: the line search must reject.
    source = GymKwargsTaskSampler(
        "HalfCheetah-v5",
        {"ctrl_cost_weight": Choice((0.0,))},
        fixed_kwargs={"forward_reward_weight": 0.0},
    )
    agent = MAMLTRPO(TINY, source.observation_space, source.action_space)
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    rng = np.random.default_rng(0)
    with make_sampler(source, agent.policy, horizon=10) as sampler:
        metrics = agent.train_step(sampler, source.sample(2, rng), rng)
    assert metrics["trpo/accepted"] == 0.0 and metrics["trpo/step_fraction"] == 0.0
    for name, value in agent.policy.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("first_order", [False, True])
def test_two_inner_steps_train_within_the_trust_region(tmp_path: Path, first_order: bool) -> None:
    # The second inner step starts from constants (the first step's adapted parameters).
    config = replace(TINY, iterations=3, num_adapt_steps=2, first_order=first_order)
    run_dir = tmp_path / "run"
    launch("maml-trpo", RunArgs(env="Point2DNav", seed=0, run_dir=run_dir, progress=False), config)
    table = rows(run_dir)
    assert len(table) == 3
    assert all(float(r["trpo/kl"]) <= config.max_kl * 1.0001 for r in table)
    assert any(float(r["trpo/accepted"]) == 1.0 for r in table)


def test_a_step_takes_cg_iters_curvature_products() -> None:
    """The step is scaled from CG's own products: ``cg_iters`` curvature products, each one
    Fisher-vector product per task group (one group here: ``cpu_chunk_steps=0``) over every
    post-adaptation step."""
    import numpy as np

    from metarl.curvature import FisherProduct
    from metarl.envs import FamilyTaskSampler, make_family
    from metarl.sampling import make_sampler

    calls: list[int] = []
    fvp = FisherProduct.fvp

    def counted(self: FisherProduct, v: dict) -> dict:
        calls.append(int(self.weights.shape[-1]))  # the steps the product ran over
        return fvp(self, v)

    config = replace(TINY, cg_iters=4, cpu_chunk_steps=0)
    family = make_family("Point2DNav")
    source = FamilyTaskSampler(family)
    agent = MAMLTRPO(config, family.observation_space, family.action_space)
    rng = np.random.default_rng(0)
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        make_sampler(source, agent.policy, horizon=10) as sampler,
    ):
        monkeypatch.setattr(FisherProduct, "fvp", counted)
        agent.train_step(sampler, source.sample(4, rng), rng)
    assert calls == [config.episodes_per_task * 10] * config.cg_iters


def test_a_run_saved_with_the_removed_curvature_subsample_loads_at_its_old_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs of earlier versions saved ``hvp_subsample: 1.0`` (every step, today's behaviour):
    they resume and evaluate; any other value is refused in one line."""
    from metarl.evaluation import load_run

    run = launch(
        "maml-trpo",
        RunArgs(env="Point2DNav", seed=3, run_dir=tmp_path / "run", progress=False),
        replace(TINY, iterations=1),
    )
    path = run / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "config": {**saved["config"], "hvp_subsample": 1.0}}))
    assert load_run(run).agent.config == replace(TINY, iterations=1)
    resume = ["train", "maml-trpo", "--resume", str(run), "--no-progress"]
    assert main([*resume, "--iterations", "2"]) == 0
    assert [r["iteration"] for r in rows(run)] == ["0", "1"]
    path.write_text(json.dumps({**saved, "config": {**saved["config"], "hvp_subsample": 0.5}}))
    assert main([*resume, "--iterations", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hvp_subsample=0.5 was removed" in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match=r"hvp_subsample=0\.5 was removed"):
        load_run(run)
