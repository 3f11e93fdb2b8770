"""Run settings no run can have are refused before any work, in one line that names the flag
and what it allows (``metarl train`` and the experiment scripts alike)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from metarl.cli import SEED_MAX, main
from metarl.runs import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--env",
    "Point2DNav",
    "--horizon",
    "10",
    "--meta-batch-size",
    "2",
    "--episodes-per-task",
    "2",
    "--hidden-sizes",
    "8",
    "--iterations",
    "1",
    "--no-progress",
]
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
HUGE = "99999999999999999999"

BAD = [
    (["--seed", "-1"], "--seed must be between 0 and 2**64 - 1, got -1"),
    (["--seed", str(SEED_MAX + 1)], f"--seed must be between 0 and 2**64 - 1, got {SEED_MAX + 1}"),
    (["--seed", HUGE], f"--seed must be between 0 and 2**64 - 1, got {HUGE}"),
    (["--iterations", "0"], "--iterations must be >= 1 (meta-iterations to train), got 0"),
    (["--iterations", "-3"], "--iterations must be >= 1"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
    (["--checkpoint-every", "-5"], "--checkpoint-every must be >= 1"),
    (["--keep-every", "0"], "--keep-every must be >= 1"),
    (["--keep-every", "-1"], "--keep-every must be >= 1"),
    (["--num-workers", "0"], "--num-workers must be >= 1"),
    (["--num-workers", "-2", "--backend", "processes"], "--num-workers must be >= 1"),
    (["--num-workers", "4"], "--num-workers 4 needs --backend processes or --backend ray"),
    (
        ["--num-workers", str(CPUS + 1), "--backend", "processes"],
        f"--num-workers {CPUS + 1} exceeds the {CPUS} CPUs this process may use",
    ),
    (["--num-workers", HUGE, "--backend", "processes"], f"give at most {CPUS}"),
    (["--torch-threads", "0"], "--torch-threads must be >= 1"),
    (["--torch-threads", "-1"], "--torch-threads must be >= 1"),
    (["--torch-threads", str(CPUS + 1)], f"--torch-threads {CPUS + 1} exceeds the {CPUS} CPUs"),
    (["--torch-threads", "100000"], f"give at most {CPUS}"),  # was a crash: no thread left
]


@pytest.mark.parametrize("command", ["eval", "render"])
def test_eval_and_render_refuse_more_torch_threads_than_cpus(tmp_path, capsys, command):
    assert main([command, str(tmp_path), "--torch-threads", str(CPUS + 1)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"metarl {command}: error: --torch-threads {CPUS + 1} exceeds the {CPUS} CPUs this "
        f"process may use: give at most {CPUS}\n"
    )


@pytest.mark.parametrize(("flags", "needle"), BAD, ids=[" ".join(f) for f, _ in BAD])
def test_a_bad_run_setting_is_one_line_naming_its_flag(tmp_path, capsys, flags, needle):
    run_dir = tmp_path / "run"
    code = main(["train", "maml-trpo", *TINY, "--run-dir", str(run_dir), *flags])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("metarl train: error: " + flags[0]), err
    assert needle in err
    assert not run_dir.exists()  # refused before any work


def test_an_experiment_script_refuses_them_the_same_way(capsys):
    spec = importlib.util.spec_from_file_location(
        "experiments_common", ROOT / "experiments/_common.py"
    )
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.main("HalfCheetahVel", "doc", ["--seed", "-1"]) == 2
    assert capsys.readouterr().err == "error: --seed must be between 0 and 2**64 - 1, got -1\n"


def test_the_edges_of_what_is_allowed_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "maml-trpo", *TINY, "--run-dir", str(run_dir), "--seed", str(SEED_MAX)])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(latest_checkpoint(run_dir))["iteration"] == 1
    # --keep-every need not divide by --checkpoint-every: each of its multiples is kept.
    other = tmp_path / "keep"
    argv = [*TINY[:-3], "--iterations", "9", "--no-progress", "--run-dir", str(other)]
    code = main(["train", "maml-trpo", *argv, "--checkpoint-every", "3", "--keep-every", "4"])
    assert code == 0, capsys.readouterr().err
    kept = sorted(p.name for p in (other / "checkpoints").iterdir())
    assert kept == ["iter_000004.pt", "iter_000008.pt", "iter_000009.pt", "latest.pt"]


def test_a_bad_seed_from_python_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    from metarl.agents import MAMLTRPO
    from metarl.launch import launch
    from metarl.train import RunArgs

    config = MAMLTRPO.preset("quick", "Point2DNav")
    for seed in (-1, 2**64, 1.5):
        run = RunArgs(env="Point2DNav", seed=seed, run_dir=tmp_path / "run", progress=False)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
            launch("maml-trpo", run, config)
        assert not (tmp_path / "run").exists()
