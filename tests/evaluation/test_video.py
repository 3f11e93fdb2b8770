"""Adaptation videos: real MuJoCo/numpy rendering, real MP4 encoding and decoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from metarl.cli import main
from metarl.evaluation import load_run
from metarl.video import LABEL_HEIGHT, compose_frame, play_stages, render_adaptation


def decode(path: Path) -> np.ndarray:
    """Every frame of a video: ``[frames, height, width, 3]`` uint8."""
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return np.stack(list(reader.iter_data()))  # len(reader) is inf for ffmpeg
    finally:
        reader.close()


def panel(frames: np.ndarray, i: int, width: int) -> np.ndarray:
    """Panel ``i`` (below its label bar) of every frame."""
    return frames[:, LABEL_HEIGHT:, i * width : (i + 1) * width].astype(np.int16)


def test_compose_frame_places_panels_under_labels() -> None:
    a = np.zeros((20, 30, 3), np.uint8)
    b = np.full((20, 30, 3), 200, np.uint8)
    frame = compose_frame([a, b], ["before adaptation", "after 1 step"])
    assert frame.shape == (LABEL_HEIGHT + 20, 60, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[LABEL_HEIGHT:, :30], a)
    np.testing.assert_array_equal(frame[LABEL_HEIGHT:, 30:], b)
    assert len(np.unique(frame[:LABEL_HEIGHT, :30].reshape(-1, 3), axis=0)) > 1  # text drawn
    with pytest.raises(ValueError, match="one label per panel"):
        compose_frame([a, b], ["one"])
    with pytest.raises(ValueError, match="panels must all be"):
        compose_frame([a, b[:10]], ["a", "b"])


def test_maml_video_has_one_panel_per_stage(runs: Callable[..., Path], tmp_path: Path) -> None:
    run = load_run(runs("maml-trpo"))
    task = run.family.task_split("default").test[1]
    stages = play_stages(run, task, num_steps=2, episodes_per_step=4, seed=0)
    assert [p.label for p in stages] == ["before adaptation", "after 1 step", "after 2 steps"]
    out = render_adaptation(
        run,
        task_index=1,
        out=tmp_path / "v.mp4",
        num_steps=2,
        episodes_per_step=4,
        width=48,
        height=32,
        progress=False,
        gif=True,
    )
    frames = decode(out)
    assert frames.shape == (max(p.length for p in stages), LABEL_HEIGHT + 32, 3 * 48, 3)
    # Same initial state, different policies: the panels differ (by more than codec noise).
    last = [panel(frames, i, 48)[-1] for i in range(3)]
    assert np.abs(last[0] - last[1]).mean() > 1.0
    assert np.abs(last[1] - last[2]).mean() > 1.0
    gif = imageio.mimread(out.with_suffix(".gif"))
    assert len(gif) == len(frames)  # Point2DNav plays at 10 fps: the GIF keeps every frame
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif", "v.mp4"]  # no partial files


def test_rl2_video_shows_the_episodes_of_one_trial(
    runs: Callable[..., Path], tmp_path: Path
) -> None:
    run = load_run(runs("rl2-ppo"))
    task = run.family.task_split("default").test[0]
    stages = play_stages(run, task, num_steps=1, episodes_per_step=1, seed=2)
    assert [p.label for p in stages] == ["episode 1", "episode 2"]
    # The recurrent state carries over: episode 2 is not a replay of episode 1.
    assert not np.array_equal(stages[0].actions, stages[1].actions)
    out = render_adaptation(
        run,
        task=task,
        out=tmp_path / "rl2.mp4",
        num_steps=1,
        seed=2,
        width=32,
        height=32,
        progress=False,
    )
    frames = decode(out)
    assert frames.shape == (max(p.length for p in stages), LABEL_HEIGHT + 32, 2 * 32, 3)


def test_mujoco_video_renders_headless(runs: Callable[..., Path], tmp_path: Path) -> None:
    run = load_run(runs("maml-trpo", env="HalfCheetahVel", horizon=6))
    out = render_adaptation(
        run,
        out=tmp_path / "cheetah.mp4",
        num_steps=1,
        episodes_per_step=2,
        width=64,
        height=48,
        progress=False,
    )
    frames = decode(out)
    assert frames.shape == (6, LABEL_HEIGHT + 48, 2 * 64, 3)  # HalfCheetah never terminates
    first = panel(frames, 0, 64)[0]
    assert first.std() > 5  # a scene, not a blank frame
    with pytest.raises(ValueError, match="has no camera 'nope'"):
        render_adaptation(run, out=tmp_path / "x.mp4", camera="nope", progress=False)
    assert not (tmp_path / "x.mp4").exists()


def test_bad_input_fails_before_rendering(runs: Callable[..., Path], tmp_path: Path) -> None:
    run = load_run(runs("maml-trpo"))
    with pytest.raises(ValueError, match=r"goal must be in .*\[-0.5, 0.5\]; got \[0.9\]"):
        render_adaptation(run, task={"goal": [0.9, 0.0]}, out=tmp_path / "v.mp4")
    with pytest.raises(ValueError, match="task_index must be in"):
        render_adaptation(run, task_index=40, out=tmp_path / "v.mp4")
    with pytest.raises(ValueError, match=r"ending in \.mp4"):
        render_adaptation(run, out=tmp_path / "v.avi")
    with pytest.raises(ValueError, match="even number of pixels"):
        render_adaptation(run, out=tmp_path / "v.mp4", width=33)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ValueError, match="cannot write to"):
        render_adaptation(run, out=blocked / "v.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_render_command(
    runs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "videos" / "cli.mp4"
    task = json.dumps({"goal": [0.3, -0.2]})
    argv = [
        "render",
        str(runs("reptile-ppo")),
        "--task",
        task,
        "--out",
        str(out),
        "--num-adapt-steps",
        "2",
        "--episodes-per-step",
        "2",
        "--width",
        "32",
        "--height",
        "32",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert decode(out).shape[1:] == (LABEL_HEIGHT + 32, 3 * 32, 3)
    assert str(out) in capsys.readouterr().out
    bad = [
        "render",
        str(runs("reptile-ppo")),
        "--task",
        '{"goal": [3, 0]}',
        "--out",
        str(tmp_path / "bad.mp4"),
    ]
    assert main(bad) == 2
    assert "goal must be in" in capsys.readouterr().err
    assert main(["render", str(runs("reptile-ppo")), "--task", "{oops"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists()


def test_gl_backend_is_chosen_before_mujoco_loads() -> None:
    code = (
        "import os, sys\n"
        "from metarl.video import select_gl_backend\n"
        "assert 'mujoco' not in sys.modules\n"
        "print(select_gl_backend(), os.environ['MUJOCO_GL'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() in (["egl", "egl"], ["osmesa", "osmesa"])
    late = code.replace("from metarl.video", "import mujoco\nfrom metarl.video").replace(
        "assert 'mujoco' not in sys.modules\n", ""
    )
    proc = subprocess.run(
        [sys.executable, "-c", late], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert "imported before MUJOCO_GL was set" in proc.stderr
