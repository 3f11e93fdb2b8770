"""Training logs: the cumulative env-step count in metrics.csv, TensorBoard's global step,
both across a resume, and optional Weights & Biases tracking (``--track``)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl.agents import MAMLTRPOConfig
from metarl.cli import main
from metarl.launch import launch
from metarl.runs import ENV_STEPS_TOTAL, WANDB_DIR, WANDB_ID_FILE, MetricsLogger
from metarl.train import RunArgs

TINY = MAMLTRPOConfig(iterations=4, meta_batch_size=2, episodes_per_task=2, hidden_sizes=(8,))
HAS_WANDB = importlib.util.find_spec("wandb") is not None


def run_args(run_dir: Path, **kw: object) -> RunArgs:
    return RunArgs(env="Point2DNav", horizon=10, seed=2, run_dir=run_dir, progress=False, **kw)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def untimed(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in table]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of the run as ``(step, value)``, after TensorBoard's own purge
    of the events a resume orphaned."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_env_steps_total_is_tensorboards_step_and_continues_across_a_resume(
    tmp_path: Path,
) -> None:
    straight = launch("maml-trpo", run_args(tmp_path / "a"), TINY)
    again = launch("maml-trpo", run_args(tmp_path / "b", checkpoint_every=2, keep_every=2), TINY)
    # Back to iteration 2, as a crash after it leaves a run: the rows and events of
    # iterations 2 and 3 are a dead trainer's, to be dropped and written again.
    ckpt = again / "checkpoints"
    shutil.copyfile(ckpt / "iter_000002.pt", ckpt / "latest.pt")
    launch("maml-trpo", RunArgs(env="Point2DNav", resume=again, progress=False), TINY)

    table = rows(again)
    assert list(table[0])[:2] == ["iteration", ENV_STEPS_TOTAL]
    assert untimed(table) == untimed(rows(straight))  # the total continued exactly
    steps = [float(r["env_steps"]) for r in table]
    totals = [float(r[ENV_STEPS_TOTAL]) for r in table]
    assert totals == list(np.cumsum(steps)) and min(steps) > 0
    for run in (straight, again):
        logged = scalars(run)
        # One point per iteration, at the env steps so far; the iteration is a scalar too.
        assert logged["iteration"] == [(int(t), float(i)) for i, t in enumerate(totals)]
        assert [s for s, _ in logged["meta/return_pre_adapt"]] == [int(t) for t in totals]
    a, b = scalars(straight), scalars(again)
    assert {k: v for k, v in a.items() if not k.startswith("time/")} == {
        k: v for k, v in b.items() if not k.startswith("time/")
    }


def test_an_earlier_versions_metrics_get_the_total_on_resume(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(
        "iteration,env_steps,meta/return\n0,100.0,1.0\n1,120.0,2.0\n2,100.0,3.0\n"
    )
    logger = MetricsLogger(tmp_path, start_iteration=2, tensorboard=False)
    assert logger.env_steps_total == 220.0
    logger.log(2, {"env_steps": 50.0, "meta/return": 4.0})
    logger.close()
    got = [(r["iteration"], r[ENV_STEPS_TOTAL], r["meta/return"]) for r in rows(tmp_path)]
    assert got == [("0", "100.0", "1.0"), ("1", "220.0", "2.0"), ("2", "270.0", "4.0")]


@pytest.mark.skipif(HAS_WANDB, reason="checks the message for a machine without wandb")
def test_track_without_wandb_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "maml-trpo", "--env", "Point2DNav", "--horizon", "5", "--iterations", "1"]
    argv += ["--meta-batch-size", "2", "--episodes-per-task", "2", "--no-progress"]
    assert main([*argv, "--track", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "metarl train: error: --track logs to Weights & Biases, which is not installed: "
        "pip install wandb (or leave out --track)"
    ]
    assert not run_dir.exists()  # nothing was started
    # A run tracked on a machine that has wandb, resumed on one that has not: the same line,
    # naming --no-track, which resumes it untracked.
    assert main([*argv, "--run-dir", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    config["run"]["track"] = True
    (run_dir / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    resume = ["train", "maml-trpo", "--resume", str(run_dir), "--iterations", "2", "--no-progress"]
    assert main(resume) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("pip install wandb (or resume with --no-track)")
    assert len(rows(run_dir)) == 1
    assert main([*resume, "--no-track"]) == 0
    assert [r["iteration"] for r in rows(run_dir)] == ["0", "1"]


@pytest.mark.skipif(not HAS_WANDB, reason="needs wandb (pip install wandb)")
def test_a_tracked_run_logs_offline_into_its_folder_and_resumes_the_same_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = launch(
        "maml-trpo", run_args(tmp_path / "run", track=True), replace(TINY, iterations=2)
    )
    run_id = (run_dir / WANDB_DIR / WANDB_ID_FILE).read_text().strip()
    first = sorted((run_dir / WANDB_DIR).glob("offline-run-*"))
    assert first and all(p.name.endswith(run_id) for p in first)
    resumed = RunArgs(env="Point2DNav", resume=run_dir, progress=False)
    launch("maml-trpo", resumed, TINY, iterations=4)
    later = sorted((run_dir / WANDB_DIR).glob("offline-run-*"))
    assert all(p.name.endswith(run_id) for p in later)  # the same Weights & Biases run
    for records in (run_dir / WANDB_DIR).glob("offline-run-*/*.wandb"):
        # wandb mirrors the TensorBoard scalars, each with TensorBoard's step (its service
        # process may still be writing the file when finish() returns).
        deadline = time.monotonic() + 30
        while b"global_step" not in records.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.2)
        data = records.read_bytes()
        assert b"meta/return_pre_adapt" in data and b"global_step" in data
    assert [r["iteration"] for r in rows(run_dir)] == ["0", "1", "2", "3"]
