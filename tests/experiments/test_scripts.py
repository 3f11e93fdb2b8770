"""Every experiment script trains end to end with a tiny budget (in a subprocess, as a user
runs it), with each agent selectable, and rejects bad options before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from metarl.envs import FAMILIES
from metarl.runs import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
ALL_SCRIPTS = sorted(p for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_"))

TINY = {
    "maml-trpo": ["--meta-batch-size", "2", "--episodes-per-task", "1", "--hidden-sizes", "8"],
    "reptile-ppo": [
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "1",
        "--num-adapt-steps",
        "1",
        "--update-epochs",
        "1",
        "--num-minibatches",
        "1",
    ],
    "rl2-ppo": [
        "--meta-batch-size",
        "2",
        "--episodes-per-trial",
        "2",
        "--update-epochs",
        "1",
        "--num-minibatches",
        "1",
        "--hidden-size",
        "8",
    ],
}
"""The smallest settings of each agent: 2 tasks, one episode (or a 2-episode trial)."""


def family_of(script: Path) -> str:
    for line in script.read_text().splitlines():
        if line.startswith("FAMILY = "):
            return line.split('"')[1]
    raise AssertionError(f"{script.name} does not set FAMILY")


SCRIPTS = [p for p in ALL_SCRIPTS if family_of(p) in FAMILIES]
"""The built-in MuJoCo families' scripts (Meta-World's runs in tests/metaworld)."""


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )


def test_one_script_per_family() -> None:
    assert sorted(family_of(s) for s in SCRIPTS) == sorted(FAMILIES)


def train_tiny(script: Path, algo: str, run_dir: Path, *extra: str) -> dict[str, object]:
    """Run ``script`` for one iteration at H = 4; ``extra`` defaults to the agent's TINY."""
    proc = run_script(
        script,
        "--algo",
        algo,
        "--iterations",
        "1",
        "--horizon",
        "4",
        "--run-dir",
        str(run_dir),
        "--no-progress",
        *(extra or TINY[algo]),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run folder: {run_dir}" in proc.stdout
    assert load_checkpoint(latest_checkpoint(run_dir))["iteration"] == 1
    return json.loads((run_dir / "config.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_trains_end_to_end(script: Path, tmp_path: Path) -> None:
    config = train_tiny(script, "maml-trpo", tmp_path / "run")
    assert config["algo"] == "maml-trpo"
    assert config["family"]["name"] == family_of(script)  # type: ignore[index]
    assert config["family"]["horizon"] == 4  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reptile-ppo", "rl2-ppo"])
def test_every_agent_is_selectable(algo: str, tmp_path: Path) -> None:
    config = train_tiny(EXPERIMENTS / "point2d_nav.py", algo, tmp_path / "run")
    assert config["algo"] == algo


@pytest.mark.slow
def test_paper_preset_follows_the_paper(tmp_path: Path) -> None:
    config = train_tiny(
        EXPERIMENTS / "half_cheetah_dir.py",
        "maml-trpo",
        tmp_path / "run",
        "--preset",
        "paper",
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "1",
    )
    agent: dict[str, object] = config["config"]  # type: ignore[assignment]
    # Finn et al. 2017: a (100, 100) ReLU policy, inner step 0.1, TRPO max KL 0.02 for this
    # family (its result file's mlr0.02); the flags override only the fields they name.
    assert agent["hidden_sizes"] == [100, 100] and agent["activation"] == "relu"
    assert agent["adapt_lr"] == 0.1 and agent["max_kl"] == 0.02
    assert agent["meta_batch_size"] == 2 and agent["iterations"] == 1
    assert config["run"]["preset"] == "paper"  # type: ignore[index]


def load_common() -> ModuleType:
    """``experiments/_common.py`` as a module (the scripts import it from their folder)."""
    spec = importlib.util.spec_from_file_location("experiments_common", EXPERIMENTS / "_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_options_fail_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    common = load_common()
    assert common.main("Point2DNav", "doc", ["--algo", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown --algo 'nope'" in err and "maml-trpo" in err
    assert common.main("Point2DNav", "doc", ["--algo", "rl2-ppo", "--preset", "paper"]) == 2
    err = capsys.readouterr().err
    assert "no preset 'paper'" in err and "varibad" in err
    assert common.main("Point2DNav", "doc", ["--env", "AntDir"]) == 2
    assert "trains Point2DNav" in capsys.readouterr().err
