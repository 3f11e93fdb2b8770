"""MuJoCo's compile notices are never printed nor written to MUJOCO_LOG.TXT; its other warnings
become Python RuntimeWarnings (in a fresh process each, since the handler is process-wide)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_in(cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_dynamics_family_and_gymnasium_v5_are_silent(tmp_path: Path) -> None:
    # A dynamics family (its model sets settotalmass; every task rescales masses and calls
    # mj_setConst), then Gymnasium's own v5 cheetah as the README's custom-sampler example
    # builds it: nothing on stdout or stderr, no log file in the working directory.
    code = (
        "import numpy as np\n"
        "from metarl.envs import make_family\n"
        "from metarl.tasks import GymKwargsTaskSampler, Uniform\n"
        "for name in ('HalfCheetahParams', 'HopperParams', 'Walker2dParams'):\n"
        "    family = make_family(name)\n"
        "    tasks = family.sample_tasks(2, np.random.default_rng(0))\n"
        "    batch = family.make_batch(2)\n"
        "    batch.set_tasks(tasks)\n"
        "    batch.reset([np.random.default_rng(1), np.random.default_rng(2)])\n"
        "    for _ in range(3):\n"
        "        batch.step(np.zeros((2, *family.action_space.shape)))\n"
        "weights = {'ctrl_cost_weight': Uniform(0.05, 0.2)}\n"
        "sampler = GymKwargsTaskSampler('HalfCheetah-v5', weights)\n"
        "for task in sampler.sample(3, np.random.default_rng(0)):\n"
        "    sampler.make_env(task).reset(seed=0)\n"
    )
    proc = run_in(tmp_path, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "" and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_other_mujoco_warnings_become_python_warnings(tmp_path: Path) -> None:
    code = (
        "import metarl.envs, mujoco, numpy as np\n"
        'xml = \'<mujoco><worldbody><body><joint type="slide"/><geom size=".1"/>\'\n'
        "m = mujoco.MjModel.from_xml_string(xml + '</body></worldbody></mujoco>')\n"
        "d = mujoco.MjData(m)\n"
        "d.qvel[:] = np.inf\n"
        "mujoco.mj_step(m, d)\n"
    )
    proc = run_in(tmp_path, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert "RuntimeWarning: MuJoCo: Nan, Inf or huge value in QVEL" in proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
