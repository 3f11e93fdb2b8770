"""Fault injection: what users are promised when things go wrong.

Real faults only: NaN weights and NaN observations from a real env, a SIGKILL at each point of a
checkpoint write, a worker process or Ray actor killed mid-batch, a SIGTERM mid-training,
flipped bytes, cut metrics files, a second trainer, a full disk. Each asserts the promise: a
diverged policy never scores, nothing kept is lost, at most the iteration in flight is redone
(bit-identically), and every failure is one clear line.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle
import numpy as np
import pytest
import torch

from metarl.agents import MAMLTRPOConfig
from metarl.cli import main
from metarl.envs import FamilyTaskSampler, Point2DNav
from metarl.envs.base import BatchStep
from metarl.envs.point2d import Point2DBatch
from metarl.evaluation import evaluate_run, load_run, make_protocol, write_eval
from metarl.launch import launch
from metarl.policies import GaussianMLPPolicy
from metarl.runs import (
    RunError,
    RunLock,
    TrainingError,
    checksum,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from metarl.sampling import DivergedError, InlineSampler
from metarl.train import RunArgs

H = 10
TINY = MAMLTRPOConfig(
    iterations=4, meta_batch_size=3, episodes_per_task=2, hidden_sizes=(8,), cpu_chunk_steps=64
)
ROOT = Path(__file__).resolve().parents[2]


def run_args(path: Path, **kw: Any) -> RunArgs:
    return RunArgs(env="Point2DNav", horizon=H, run_dir=path, progress=False, **kw)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)
        ]


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(run_dir))["agent"]["policy"]


def assert_same_run(a: Path, b: Path) -> None:
    assert rows(a) == rows(b)
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


# --------------------------------------------------------------------------------------------
# Real faulty envs: a family whose observations turn NaN, one whose worker dies
# --------------------------------------------------------------------------------------------


class _NaNAfterBatch(Point2DBatch):
    def step(self, actions: Any, indices: Any = None) -> BatchStep:
        out = super().step(actions, indices)
        idx = self._indices(indices)
        # Tasks with a goal right of the middle return a NaN observation at their 3rd step.
        poisoned = (self._params["goal"][idx, 0] > 0) & (self._trail_count[idx] == 4)
        out.obs[poisoned] = np.nan
        return out


class NaNObsPoint2D(Point2DNav):
    """Point2DNav whose env returns a NaN observation on tasks with goal x > 0."""

    name: ClassVar[str] = "NaNObsPoint2DTest"

    def make_batch(self, num_envs: int) -> Point2DBatch:
        return _NaNAfterBatch(self, num_envs)


class _DyingBatch(Point2DBatch):
    def step(self, actions: Any, indices: Any = None) -> BatchStep:
        self.family.calls += 1
        marker = Path(self.family.marker)
        if self.family.calls >= self.family.die_at:
            try:
                # Once, by the one worker that removes the marker (both reach this step at
                # once): the other worker and the resumed run's workers live on.
                marker.unlink()
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().step(actions, indices)


class DyingPoint2D(Point2DNav):
    """Point2DNav whose worker process SIGKILLs itself at its ``die_at``-th step while
    ``marker`` exists (each worker process counts its own steps)."""

    name: ClassVar[str] = "DyingPoint2DTest"

    def __init__(self, marker: str, die_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.marker, self.die_at, self.calls = marker, die_at, 0

    def make_batch(self, num_envs: int) -> Point2DBatch:
        return _DyingBatch(self, num_envs)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------------------------------
# 1. A diverged policy never scores
# --------------------------------------------------------------------------------------------


def test_nan_weights_mark_their_tasks_diverged_and_leave_the_others_untouched():
    family = Point2DNav(horizon=H)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    good = {k: v.detach().clone() for k, v in policy.named_parameters()}
    bad = {k: v.clone() for k, v in good.items()}
    bad[next(k for k in bad if k.endswith("weight"))][0, 0] = float("nan")
    sampler = InlineSampler(family, policy)
    healthy = sampler.sample(tasks, 2, [good, good, good], seed=5)
    batch = sampler.sample(tasks, 2, [good, bad, good], seed=5)
    assert batch.diverged.tolist() == [False, False, True, True, False, False]
    assert batch.nonfinite_kinds() == "actions"
    assert torch.isnan(batch.returns[2:4]).all() and torch.isnan(batch.episode_returns[2:4]).all()
    assert (batch.lengths[2:4] == 0).all()  # never a return of 0 from zero steps
    keep = [0, 1, 4, 5]  # the healthy tasks' columns: the bits of an all-healthy batch
    for name in ("returns", "lengths", "episode_returns", "last_obs"):
        assert torch.equal(getattr(batch, name)[keep], getattr(healthy, name)[keep]), name
    assert torch.equal(batch.rewards[:, keep], healthy.rewards[:, keep])
    # It survives the moves a batch makes: a per-task view, a pickle (workers) and a copy.
    assert batch.for_task(1).diverged.all() and not batch.for_task(0).diverged.any()
    assert torch.equal(pickle.loads(pickle.dumps(batch)).nonfinite, batch.nonfinite)
    if torch.cuda.is_available():
        assert torch.equal(batch.to("cuda").nonfinite.cpu(), batch.nonfinite)
    sampler.on_diverged = "raise"
    with pytest.raises(DivergedError, match=r"non-finite actions in 1 of 3 tasks") as info:
        sampler.sample(tasks, 2, [good, bad, good], seed=5)
    assert info.value.tasks == [1]


def test_a_nan_observation_from_the_env_marks_its_episode_diverged():
    family = NaNObsPoint2D(horizon=H)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    from metarl.tasks import Task

    tasks = [Task(goal=[-0.3, 0.1]), Task(goal=[0.3, 0.1])]
    batch = InlineSampler(family, policy).sample(tasks, 2, seed=0)
    assert batch.diverged.tolist() == [False, False, True, True]
    assert batch.nonfinite_kinds() == "observations"
    assert torch.isfinite(batch.returns[:2]).all() and torch.isnan(batch.returns[2:]).all()
    assert (batch.lengths[2:] == 2).all()  # the 3rd step, the broken one, is dropped
    assert batch.unstable[2:].all()
    for t in batch.tensors().values():  # the kept steps stay finite
        if t.is_floating_point() and t.dim() > 1 and t is not batch.episode_returns:
            assert torch.isfinite(t).all()
    # Trial mode: the diverged episode and the ones it kept from running have no return.
    trials = InlineSampler(family, policy).sample(tasks, 1, seed=0, episodes_per_trial=2)
    assert torch.isfinite(trials.episode_returns[0]).all()
    assert torch.isnan(trials.episode_returns[1]).all()


def test_eval_reports_a_diverged_step_as_diverged(tmp_path, capsys):
    run_dir = launch("maml-trpo", run_args(tmp_path / "run"), replace(TINY, iterations=1))
    run = load_run(run_dir)
    protocol = make_protocol(
        "quick",
        "Point2DNav",
        num_tasks=3,
        num_steps=2,
        episodes_per_step=2,
        step_sizes=[float("inf"), float("inf")],
        seeds=[0, 1],
    )
    result = evaluate_run(run, protocol, baseline_tasks=0)
    summaries = result.summaries()
    assert summaries[0].diverged == 0 and np.isfinite(summaries[0].mean)
    for s in summaries[1:]:
        assert s.diverged == 6 and np.isnan(s.mean) and np.isnan(s.ci_low)
    paths = write_eval(result, tmp_path / "eval")
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [r["diverged"] for r in table] == ["0", "6", "6"]
    assert [r["mean"] for r in table][1:] == ["nan", "nan"]
    import json

    data = json.loads(paths["json"].read_text())  # strict JSON: no NaN tokens
    assert data["diverged"] == [0, 6, 6] and data["returns"][0][1] == [None, None, None]
    code = main(
        [
            "eval",
            str(run_dir),
            "--no-baseline",
            "--no-progress",
            "--num-tasks",
            "2",
            "--seeds",
            "0",
            "--step-sizes",
            "inf",
            "inf",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"\n  step 1 +100 +diverged  \(2 of 2 task-seed values\)", out), out
    assert "diverged: non-finite actions, observations or rewards" in out
    assert " 0.00 " not in out


def test_training_stops_at_divergence_keeping_the_last_good_iteration(tmp_path, capsys):
    argv = [
        "train",
        "maml-trpo",
        "--env",
        "Point2DNav",
        "--horizon",
        str(H),
        "--meta-batch-size",
        "3",
        "--episodes-per-task",
        "2",
        "--hidden-sizes",
        "8",
        "--no-progress",
    ]
    straight = tmp_path / "straight"
    assert cli(capsys, *argv, "--iterations", "4", "--run-dir", str(straight))[0] == 0
    run_dir = tmp_path / "run"
    assert cli(capsys, *argv, "--iterations", "2", "--run-dir", str(run_dir))[0] == 0
    # An infinite inner step size from iteration 3 on: the adapted policies act NaN.
    resume = [
        "train",
        "maml-trpo",
        "--resume",
        str(run_dir),
        "--iterations",
        "4",
        "--no-progress",
    ]
    code, err = cli(capsys, *resume, "--adapt-lr", "inf")
    assert code == 1
    assert_one_line(
        err,
        "the policy diverged in iteration 3 (non-finite actions in 3 of 3 tasks)",
        "latest.pt keeps iteration 2",
        f"continue with --resume {run_dir} and a lower --adapt-lr (now inf) or --max-kl (now 0.01)",
    )
    assert load_checkpoint(latest_checkpoint(run_dir))["iteration"] == 2
    assert [r["iteration"] for r in rows(run_dir)] == ["0", "1"]
    # Lowered back, the run continues as if nothing had happened, bit for bit.
    assert cli(capsys, *resume, "--adapt-lr", "0.1")[0] == 0
    assert_same_run(straight, run_dir)


def test_an_update_to_nan_is_never_saved(tmp_path, capsys):
    # RL^2 with a huge learning rate: the first update sends the weights to NaN.
    run_dir = tmp_path / "rl2"
    code, err = cli(
        capsys,
        "train",
        "rl2-ppo",
        "--env",
        "Point2DNav",
        "--horizon",
        "20",
        "--iterations",
        "4",
        "--meta-batch-size",
        "2",
        "--num-minibatches",
        "1",
        "--hidden-size",
        "8",
        "--learning-rate",
        "1000",
        "--keep-every",
        "1",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    )
    assert code == 1
    assert_one_line(
        err,
        "the policy diverged in iteration 1 (its update made policy.",
        "non-finite",
        "was removed",
        "run again with a lower --learning-rate (now 1000)",
    )
    assert not run_dir.exists()
    # --adapt-lr inf diverges before anything completes: nothing is left behind either.
    fresh = tmp_path / "maml"
    argv = [
        "train",
        "maml-trpo",
        "--env",
        "Point2DNav",
        "--horizon",
        str(H),
        "--iterations",
        "2",
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "2",
        "--hidden-sizes",
        "8",
        "--run-dir",
        str(fresh),
        "--no-progress",
    ]
    code, err = cli(capsys, *argv, "--adapt-lr", "inf")
    assert code == 1
    assert_one_line(err, "diverged in iteration 1", "was removed", "--adapt-lr (now inf)")
    assert not fresh.exists()
    assert cli(capsys, *argv)[0] == 0  # the same command, with a sane step size, runs


def test_resume_checks_every_setting_given_against_the_run(tmp_path, capsys):
    import json

    run_dir = launch("rl2-ppo", run_args(tmp_path / "run"), _rl2_tiny(), iterations=1)
    before = (run_dir / "metrics.csv").read_text()
    resume = ["train", "rl2-ppo", "--resume", str(run_dir), "--iterations", "2"]
    for flag, value, theirs in (
        ("--seed", "5", "0"),
        ("--meta-batch-size", "3", "2"),
        ("--horizon", "30", str(H)),
        ("--hidden-size", "16", "8"),
        ("--preset", "varibad", "quick"),
    ):
        code, err = cli(capsys, *resume, flag, value)
        assert code == 2
        assert_one_line(err, f"{flag} {value} differs from the run's {theirs}")
    code, err = cli(capsys, *resume, "--env", "HalfCheetahVel")
    assert_one_line(err, "trains 'Point2DNav', not 'HalfCheetahVel'")
    # An experiment script fixes its family: a run of another one is refused, default or not.
    script = subprocess.run(
        [
            sys.executable,
            "experiments/half_cheetah_vel.py",
            "--algo",
            "rl2-ppo",
            "--resume",
            str(run_dir),
            "--iterations",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert script.returncode == 2
    assert_one_line(script.stderr, "trains 'Point2DNav', not 'HalfCheetahVel'")
    assert (run_dir / "metrics.csv").read_text() == before
    # A step size may change: applied from the checkpoint on and recorded with the extension.
    assert cli(capsys, *resume, "--learning-rate", "0.0005", "--no-progress")[0] == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["learning_rate"] == 0.0005 and config["config"]["iterations"] == 2
    assert config["resumes"] == [
        {"iteration": 1, "changed": {"iterations": [1, 2], "learning_rate": [0.001, 0.0005]}}
    ]
    same = launch("rl2-ppo", run_args(tmp_path / "same"), _rl2_tiny(), iterations=2)
    assert rows(same)[0] == rows(run_dir)[0] and rows(same)[1] != rows(run_dir)[1]


def _rl2_tiny() -> Any:
    from metarl.agents import RL2PPOConfig

    return RL2PPOConfig(
        iterations=2,
        meta_batch_size=2,
        episodes_per_trial=2,
        hidden_size=8,
        update_epochs=1,
        num_minibatches=1,
        learning_rate=0.001,
    )


def test_nan_weights_in_a_checkpoint_are_refused_on_resume(tmp_path, capsys):
    run_dir = launch(
        "maml-trpo", run_args(tmp_path / "run", keep_every=1), replace(TINY, iterations=2)
    )
    path = latest_checkpoint(run_dir)
    state = load_checkpoint(path)
    name = next(k for k in state["agent"]["policy"] if k.endswith("weight"))
    state["agent"]["policy"][name][0, 0] = float("nan")
    torch.save(state, path)  # no checksum: as an older metarl or a hand edit would write it
    code, err = cli(capsys, "train", "maml-trpo", "--resume", str(run_dir), "--iterations", "3")
    assert code == 2
    assert_one_line(err, "holds NaN or infinite values", name, "iter_000001.pt")
    save_checkpoint(run_dir, state, 2, keep=False)  # a NaN with a valid checksum: the same
    assert "holds NaN" in cli(capsys, "train", "maml-trpo", "--resume", str(run_dir))[1]


# --------------------------------------------------------------------------------------------
# 2. A crash costs at most the iteration in flight
# --------------------------------------------------------------------------------------------


@pytest.fixture
def local_ray() -> Any:
    """Ray, not yet started: the test's RaySampler starts a local instance (on 127.0.0.1),
    shut down afterwards."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_a_worker_killed_mid_batch_resumes_bit_identically(tmp_path, backend, request):
    if backend == "ray":
        # Ray sends the family to its actors with its own cloudpickle: by value, as processes do.
        request.getfixturevalue("local_ray").cloudpickle.register_pickle_by_value(
            sys.modules[__name__]
        )
    marker = tmp_path / "kill-once"
    marker.touch()

    def sampler(die_at: int = 10**9) -> FamilyTaskSampler:
        return FamilyTaskSampler(DyingPoint2D(str(marker), die_at, horizon=H))

    args = dict(env="DyingPoint2DTest", horizon=H, progress=False, checkpoint_every=10)
    config = replace(TINY, iterations=4)
    straight = launch(
        "maml-trpo", RunArgs(run_dir=tmp_path / "a", **args), config, task_sampler=sampler()
    )
    # Each iteration steps every worker 2 batches x H steps: the first worker to reach its 3rd
    # iteration's 4th step SIGKILLs its own process (the marker: only one of the two does).
    broken = tmp_path / "b"
    with pytest.raises(TrainingError) as info:
        launch(
            "maml-trpo",
            RunArgs(run_dir=broken, backend=backend, num_workers=2, **args),
            config,
            task_sampler=sampler(die_at=2 * 2 * H + 3),
        )
    message = str(info.value)
    assert "\n" not in message
    if backend == "ray":
        assert re.search(
            r"iteration 3 failed: Ray actor [01] \(pid \d+ on .*\) died during sampling", message
        )
    else:
        assert "iteration 3 failed: worker" in message and "died" in message
    assert f"keeps iteration 2; continue with --resume {broken}" in message
    assert not marker.exists()
    assert load_checkpoint(latest_checkpoint(broken))["iteration"] == 2
    assert [r["iteration"] for r in rows(broken)] == ["0", "1"]
    launch(
        "maml-trpo",
        RunArgs(resume=broken, backend=backend, num_workers=2, **args),
        config,
        task_sampler=sampler(),
    )
    assert_same_run(straight, broken)


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process (Linux /proc)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        table[int(stat.parent.name)] = (int(ppid), state)
    return table


def _descendants(pid: int) -> set[int]:
    table = _process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def _running(pids: set[int]) -> set[int]:
    """The processes of ``pids`` still running (a zombie is dead: it waits for its reaper)."""
    table = _process_table()
    return {p for p in pids if p in table and table[p][1] != "Z"}


# Ray's own log lines (a local instance starting; its C++ core), not metarl's messages.
_RAY_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ |\[\d{4}-\d\d-\d\d )")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_sigterm_mid_training_saves_the_last_iteration_and_resumes_bit_identically(
    tmp_path, capsys, backend
):
    if backend == "ray":
        pytest.importorskip("ray")
    argv = [
        "train",
        "maml-trpo",
        "--env",
        "Point2DNav",
        "--horizon",
        str(H),
        "--meta-batch-size",
        "3",
        "--episodes-per-task",
        "2",
        "--hidden-sizes",
        "8",
        "--no-progress",
    ]
    run_dir = tmp_path / "run"
    # No checkpoint would be written before iteration 1000: only the SIGTERM's save keeps any.
    trainer = subprocess.Popen(
        [
            *(sys.executable, "-m", "metarl", *argv, "--iterations", "1000"),
            *("--checkpoint-every", "1000", "--keep-every", "1000"),
            *("--backend", backend, "--num-workers", "2", "--run-dir", str(run_dir)),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        metrics = run_dir / "metrics.csv"
        while time.monotonic() < deadline and trainer.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break  # the header and two completed iterations
            time.sleep(0.005)  # the SIGTERM lands close to a row's write, the racy moment
        assert trainer.poll() is None, trainer.communicate()[1]
        helpers = _descendants(trainer.pid)  # its sampler's worker processes or Ray's
        assert len(helpers) >= 2
        trainer.send_signal(signal.SIGTERM)  # as a scheduler, `timeout` or `kill` does
        _, err = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert trainer.returncode == 143, err
    ours = [line for line in err.splitlines() if line.strip() and not _RAY_LOG.match(line)]
    assert_one_line("\n".join(ours), "terminated by SIGTERM: ", "latest.pt keeps iteration ")
    done = int(re.search(r"keeps iteration (\d+)", err).group(1))
    assert f"keeps iteration {done}; continue with --resume {run_dir}" in err
    assert done >= 2
    assert load_checkpoint(latest_checkpoint(run_dir))["iteration"] == done
    assert [r["iteration"] for r in rows(run_dir)] == [str(i) for i in range(done)]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    RunLock(run_dir).release()  # free: a new trainer may take the run
    deadline = time.monotonic() + 60  # Ray's own processes stop once its driver has gone
    while _running(helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(helpers), "processes outlived the trainer"
    # Resumed (here, inline) it ends as a run that never stopped, bit for bit.
    end = str(done + 2)
    resume = ["train", "maml-trpo", "--resume", str(run_dir), "--iterations", end, "--no-progress"]
    assert cli(capsys, *resume)[0] == 0
    straight = tmp_path / "straight"
    assert cli(capsys, *argv, "--iterations", end, "--run-dir", str(straight))[0] == 0
    assert_same_run(straight, run_dir)


def test_an_exception_mid_run_saves_the_last_completed_iteration(tmp_path):
    marker = tmp_path / "fail-once"
    config = replace(TINY, iterations=4)

    class Failing(FamilyTaskSampler):
        calls = 0

        def sample(self, n: int, rng: np.random.Generator) -> list:
            Failing.calls += 1
            if Failing.calls == 3 and marker.exists():
                raise MemoryError("injected at the 3rd iteration")
            return super().sample(n, rng)

    args = dict(env="Point2DNav", horizon=H, progress=False, checkpoint_every=10)
    straight = launch(
        "maml-trpo",
        RunArgs(run_dir=tmp_path / "a", **args),
        config,
        task_sampler=FamilyTaskSampler(Point2DNav(horizon=H)),
    )
    marker.touch()
    broken = tmp_path / "b"
    with pytest.raises(
        TrainingError,
        match=r"iteration 3 failed: MemoryError: injected .* "
        r"keeps iteration 2; continue with --resume",
    ):
        launch(
            "maml-trpo",
            RunArgs(run_dir=broken, **args),
            config,
            task_sampler=Failing(Point2DNav(horizon=H)),
        )
    marker.unlink()
    launch(
        "maml-trpo",
        RunArgs(resume=broken, **args),
        config,
        task_sampler=FamilyTaskSampler(Point2DNav(horizon=H)),
    )
    assert_same_run(straight, broken)


@pytest.mark.slow
def test_a_full_disk_loses_nothing_and_resumes_bit_identically(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        argv = [
            "train",
            "maml-trpo",
            "--env",
            "Point2DNav",
            "--horizon",
            str(H),
            "--meta-batch-size",
            "3",
            "--episodes-per-task",
            "2",
            "--hidden-sizes",
            "8",
            "--checkpoint-every",
            "1",
            "--no-progress",
        ]
        straight = tmp_path / "a"
        assert cli(capsys, *argv, "--iterations", "4", "--run-dir", str(straight))[0] == 0
        run_dir = disk / "run"
        assert cli(capsys, *argv, "--iterations", "2", "--run-dir", str(run_dir))[0] == 0
        filler = disk / "filler"
        resume = ["train", "maml-trpo", "--resume", str(run_dir), "--iterations", "4"]
        for left, needles in (
            (0, ("cannot resume: OSError: [Errno 28] No space left on device", "untouched")),
            (3 * 4096, ("iteration 3 failed: OSError: [Errno 28] No space left", "failed too")),
        ):
            filler.unlink(missing_ok=True)
            stat = os.statvfs(disk)
            filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - left))
            code, err = cli(capsys, *resume, "--no-progress")
            assert code == 1
            assert_one_line(err, *needles, "keeps iteration 2", f"--resume {run_dir}")
        assert not list((run_dir / "checkpoints").glob(".*.tmp"))
        assert load_checkpoint(latest_checkpoint(run_dir))["iteration"] == 2
        filler.unlink()
        assert (
            cli(
                capsys,
                "train",
                "maml-trpo",
                "--resume",
                str(run_dir),
                "--iterations",
                "4",
                "--no-progress",
            )[0]
            == 0
        )
        assert_same_run(straight, run_dir)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_resume_on_a_read_only_file_system_is_one_line_naming_no_wrong_iteration(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        run_dir = launch("maml-trpo", run_args(disk / "run"), replace(TINY, iterations=2))
        before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
        assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
        code, err = cli(capsys, "train", "maml-trpo", "--resume", str(run_dir), "--iterations", "3")
        assert code == 1
        # The lock cannot be taken before the checkpoint is read: no iteration is claimed.
        assert_one_line(
            err,
            "cannot resume: OSError: [Errno 30] Read-only file system",
            "latest.pt is untouched; continue with --resume",
        )
        assert "keeps iteration" not in err
        assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --------------------------------------------------------------------------------------------
# 3. Checkpoints never lose a kept one
# --------------------------------------------------------------------------------------------

# One process imports torch once, then forks a writer per kill point: the writer SIGKILLs
# itself just before its k-th file operation in checkpoints/ (an audit hook sees each one).
_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from metarl.runs import save_checkpoint

    def state(it):
        return {"iteration": it, "agent": {"w": torch.full((64,), float(it))}, "rng": {}}

    def write(run_dir, kill_at):
        events = 0

        def hook(event, args):
            nonlocal events
            if event in ("open", "os.rename", "os.remove", "os.chmod") and "checkpoints" in str(
                args[0] if args else ""
            ):
                events += 1
                if events == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        sys.addaudithook(hook)
        save_checkpoint(run_dir, state(4), 4, keep=True)
        return events

    root = sys.argv[1]
    points = 0
    for kill_at in range(0, 100):
        run_dir = os.path.join(root, f"kill-{kill_at}")
        save_checkpoint(run_dir, state(2), 2, keep=True)
        pid = os.fork()
        if pid == 0:
            events = write(run_dir, kill_at)
            with open(os.path.join(root, "events"), "w") as f:
                f.write(str(events))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if kill_at == 0:
            points = int(open(os.path.join(root, "events")).read())
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        else:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        if kill_at == points:
            break
    print(points)
    """
)


def test_a_kill_at_any_point_of_a_checkpoint_write_keeps_every_kept_one(tmp_path):
    from metarl.runs import remove_stale_temporaries

    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    points = int(proc.stdout.split()[-1])
    assert points >= 4  # two files: each opened and renamed at least
    stale = 0
    for kill_at in range(0, points + 1):
        ckpt = tmp_path / f"kill-{kill_at}" / "checkpoints"
        kept = sorted(p.name for p in ckpt.glob("iter_*.pt"))
        # Every kept checkpoint loads; the new kept one exists before latest.pt says 4.
        for name in kept:
            assert load_checkpoint(ckpt / name)["iteration"] == int(name[5:11])
        assert "iter_000002.pt" in kept
        latest = load_checkpoint(ckpt / "latest.pt")["iteration"]
        assert latest in (2, 4)
        if latest == 4:
            assert "iter_000004.pt" in kept
        if kill_at == 0:  # the unbroken write
            assert latest == 4
        # The next write (a resumed trainer's) removes what the killed one left.
        stale += bool(remove_stale_temporaries(ckpt.parent))
        assert not list(ckpt.glob(".*"))
    assert stale >= 2  # kills mid-write did leave temporary files (of each file)


def test_keep_every_keeps_its_multiples_whatever_checkpoint_every_is(tmp_path):
    run_dir = launch(
        "maml-trpo",
        run_args(tmp_path / "run", checkpoint_every=3, keep_every=2),
        replace(TINY, iterations=5),
    )
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["iter_000002.pt", "iter_000004.pt", "iter_000005.pt", "latest.pt"]


def test_stale_temporary_files_are_removed_on_resume(tmp_path):
    run_dir = launch("maml-trpo", run_args(tmp_path / "run"), replace(TINY, iterations=1))
    stale = run_dir / "checkpoints" / ".latest.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    launch(
        "maml-trpo", RunArgs(env="Point2DNav", resume=run_dir, progress=False), TINY, iterations=2
    )
    assert not stale.exists()


def test_files_get_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        run_dir = launch("maml-trpo", run_args(tmp_path / "run"), replace(TINY, iterations=1))
    finally:
        os.umask(old)
    for path in (run_dir / "config.json", run_dir / "metrics.csv", latest_checkpoint(run_dir)):
        assert path.stat().st_mode & 0o777 == 0o644, path


# --------------------------------------------------------------------------------------------
# 4. Damaged files are detected
# --------------------------------------------------------------------------------------------


def test_flipped_bytes_in_a_checkpoint_are_never_used(tmp_path):
    state = {"iteration": 3, "agent": {"w": torch.linspace(-1, 1, 256)}, "rng": {"x": "y"}}
    save_checkpoint(tmp_path, state, 3, keep=False)
    path = tmp_path / "checkpoints" / "latest.pt"
    original = path.read_bytes()
    refused = 0
    for pos in range(0, len(original), 7):
        damaged = bytearray(original)
        damaged[pos] ^= 0x5A
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(path)
        except RunError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            refused += 1
            continue
        # A flip the format ignores (a zip header's CRC or date): the contents are intact.
        assert loaded["iteration"] == 3 and torch.equal(loaded["agent"]["w"], state["agent"]["w"])
    assert refused > len(original) // 7 // 2
    # Bytes of the weights themselves: the checksum refuses them, naming what to do.
    data = bytearray(original)
    at = data.find(torch.linspace(-1, 1, 256).numpy().tobytes()[:16])
    assert at > 0
    data[at + 100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"is damaged .* sha256"):
        load_checkpoint(path)
    assert checksum({"a": torch.zeros(2)}) != checksum({"a": torch.zeros(2, dtype=torch.float64)})


def test_a_cut_metrics_file_is_repaired_on_resume_and_a_broken_one_refused(tmp_path, capsys):
    config = replace(TINY, iterations=4)
    straight = launch("maml-trpo", run_args(tmp_path / "a", checkpoint_every=1), config)
    run_dir = launch(
        "maml-trpo", run_args(tmp_path / "b", checkpoint_every=1), config, iterations=2
    )
    metrics = run_dir / "metrics.csv"
    good = metrics.read_text()
    # A row past the checkpoint and a row cut short by a crash: both dropped.
    lines = (tmp_path / "a" / "metrics.csv").read_text().splitlines(keepends=True)
    metrics.write_text(good + lines[3] + lines[4][:25])
    launch(
        "maml-trpo", RunArgs(env="Point2DNav", resume=run_dir, progress=False), config, iterations=4
    )
    assert_same_run(straight, run_dir)
    resume = ["train", "maml-trpo", "--resume", str(run_dir), "--iterations", "6"]
    for damage, needle in (
        ("", "is empty"),
        (good.split("\n", 1)[1], "no header row"),
        (
            good.splitlines(keepends=True)[0] + good.splitlines(keepends=True)[2],
            "iterations 0, 2-3 are missing",
        ),
        (None, "is missing"),
    ):
        if damage is None:
            metrics.unlink()
        else:
            metrics.write_text(damage)
        code, err = cli(capsys, *resume)
        assert code == 2
        assert_one_line(err, needle, str(metrics))


def test_a_second_trainer_on_a_run_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capsys):
    run_dir = launch("maml-trpo", run_args(tmp_path / "run"), replace(TINY, iterations=1))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from metarl.runs import RunLock
            lock = RunLock({str(run_dir)!r})
            print("locked", flush=True)
            time.sleep(120)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = (run_dir / "metrics.csv").read_text()
        code, err = cli(capsys, "train", "maml-trpo", "--resume", str(run_dir), "--iterations", "2")
        assert code == 2
        assert_one_line(err, f"is being trained by pid {holder.pid}", "train.lock")
        assert (run_dir / "metrics.csv").read_text() == before  # untouched
        with pytest.raises(RunError, match="being trained"):
            RunLock(run_dir)
        holder.send_signal(signal.SIGKILL)  # the lock file stays, its flock dies with it
        holder.wait(30)
        assert (run_dir / "train.lock").exists()
        start = time.monotonic()
        assert (
            cli(
                capsys,
                "train",
                "maml-trpo",
                "--resume",
                str(run_dir),
                "--iterations",
                "2",
                "--no-progress",
            )[0]
            == 0
        )
        assert time.monotonic() - start < 60
        assert [r["iteration"] for r in rows(run_dir)] == ["0", "1"]
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_run_killed_before_its_first_checkpoint_is_started_again_by_the_same_command(
    tmp_path, capsys
):
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "maml-trpo",
        "--env",
        "Point2DNav",
        "--horizon",
        str(H),
        "--iterations",
        "1",
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "2",
        "--hidden-sizes",
        "8",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metarl",
            *argv[:-1],
            "--meta-batch-size",
            "100000",
            "--iterations",
            "1",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "train.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / "train.lock").exists()
        code, err = cli(capsys, *argv)  # its trainer still lives: refused, nothing touched
        assert code == 2
        assert_one_line(err, "is being trained by pid")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((run_dir / "checkpoints").glob("*.pt"))
    assert cli(capsys, *argv)[0] == 0
    assert [r["iteration"] for r in rows(run_dir)] == ["0"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a run")
    code, err = cli(capsys, *argv[:-2], str(tmp_path / "mine"), "--no-progress")
    assert code == 2 and "already exists" in err


def test_a_checkpoint_with_the_wrong_keys_is_one_line(tmp_path, capsys):
    run_dir = launch("maml-trpo", run_args(tmp_path / "run"), replace(TINY, iterations=1))
    state = load_checkpoint(latest_checkpoint(run_dir))
    state["agent"] = {"weights": torch.zeros(1)}
    save_checkpoint(run_dir, state, 1, keep=False)
    code, err = cli(capsys, "train", "maml-trpo", "--resume", str(run_dir), "--iterations", "2")
    assert code == 2
    assert_one_line(err, "does not fit this maml-trpo run")
    code, err = cli(capsys, "train", "maml-trpo", "--run-dir", str(run_dir / "config.json"))
    assert code == 2
    assert_one_line(err, "is a file, not a folder")
