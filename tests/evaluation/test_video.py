"""Adaptation videos: real MuJoCo/numpy rendering, real MP4 encoding and decoding."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest

from metarl.cli import main
from metarl.evaluation import load_run
from metarl.video import (
    LABEL_HEIGHT,
    LINE_SPACING,
    compose_frame,
    play_stages,
    render_adaptation,
    task_view,
    video_name,
)


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


# -- what each panel says and draws ------------------------------------------------------------

W, H = 96, 64  # panel size of the overlay tests


def render_pair(
    run_dir: Path, folder: Path, task: dict[str, object], width: int = W, height: int = H
) -> tuple[Any, Any]:
    """The same video with and without its overlay, decoded: two ``[T, bar + H, n W, 3]``."""
    run = load_run(run_dir)
    frames = []
    folder.mkdir(parents=True, exist_ok=True)
    for overlay in (True, False):
        out = render_adaptation(
            run,
            task=task,
            out=folder / f"{overlay}.mp4",
            num_steps=1,
            episodes_per_step=2,
            width=width,
            height=height,
            progress=False,
            overlay=overlay,
        )
        frames.append(decode(out).astype(np.int16))
    return frames[0], frames[1]


def test_overlay_writes_the_task_and_a_live_distance_in_each_bar(
    runs: Callable[..., Path], tmp_path: Path
) -> None:
    width = 256  # room for the whole line
    on, off = render_pair(runs("maml-trpo"), tmp_path, {"goal": [0.3, -0.2]}, width, 32)
    first_line = slice(2, LINE_SPACING)
    second_line = slice(LINE_SPACING + 2, LABEL_HEIGHT - 4)
    for i in range(2):
        cols = slice(i * width, (i + 1) * width)
        # The stage and return are the same; the second line is the overlay's alone.
        assert np.abs(on[:, first_line, cols] - off[:, first_line, cols]).mean() < 2.0
        assert off[:, second_line, cols].std() < 3.0  # bare bar
        assert on[:, second_line, cols].std() > 20.0  # text
        # The distance changes as the point moves: the line's digits change over the episode.
        line = on[:, second_line, cols]
        assert np.count_nonzero(np.abs(line[0] - line[-1]).max(-1) > 60) >= 5
    # Point2DNav draws its own goal: the scene is the same with or without the overlay.
    assert np.abs(on[:, LABEL_HEIGHT + 4 :] - off[:, LABEL_HEIGHT + 4 :]).mean() < 1.0


@pytest.mark.parametrize(
    ("env", "key", "plus_x", "minus_x", "channel"),
    [
        ("HalfCheetahDir", "direction", 1.0, -1.0, 1),  # a green arrow on the floor ahead
        ("AntGoal", "goal", [1.5, 0.0], [-1.5, 0.0], 0),  # a red post at the goal
    ],
)
def test_the_target_is_drawn_where_it_lies(
    runs: Callable[..., Path],
    tmp_path: Path,
    env: str,
    key: str,
    plus_x: object,
    minus_x: object,
    channel: int,
) -> None:
    run_dir = runs("maml-trpo", env=env, horizon=6)
    centre = {}
    for name, value in (("+x", plus_x), ("-x", minus_x)):
        on, off = render_pair(run_dir, tmp_path / name, {key: value}, width=128, height=96)
        # Panel 0 (before adaptation) is the same episode for both tasks: the policy does
        # not see the task, so only the marker differs between them.
        scene_on, scene_off = on[:, LABEL_HEIGHT:, :128], off[:, LABEL_HEIGHT:, :128]
        changed = np.abs(scene_on - scene_off).sum(-1) > 150  # [T, H, W], above codec noise
        assert changed.reshape(len(on), -1).sum(1).min() >= 15  # drawn in every frame
        # The changed pixels have the marker's colour.
        pixels = scene_on[changed]
        others = np.delete(pixels, channel, axis=1).max(1)
        assert np.mean(pixels[:, channel] > others + 30) > 0.7
        centre[name] = np.nonzero(changed)[2].mean()
        # The bar says the task (and the robot's progress on it).
        assert on[:, LINE_SPACING + 2 : LABEL_HEIGHT - 4, :128].std() > 20.0
    # The camera looks along +y, so +x is to the right.
    assert centre["+x"] > centre["-x"] + 10, centre


def test_video_names_say_the_family_and_the_task() -> None:
    from metarl.envs import make_family

    vel, dirs = make_family("HalfCheetahVel"), make_family("HalfCheetahDir")
    point = make_family("Point2DNav")
    assert video_name(vel, {"velocity": 1.3}) == "HalfCheetahVel-velocity-1.30"
    assert video_name(vel, {"velocity": 1.2345}) == "HalfCheetahVel-velocity-1.2345"
    assert video_name(dirs, {"direction": -1.0}, 1) == "HalfCheetahDir-direction-backward-test1"
    assert video_name(make_family("HumanoidDir"), {"angle": math.pi / 2}) == (
        "HumanoidDir-angle-90deg"
    )
    assert video_name(point, {"goal": [0.3, -0.2]}) == "Point2DNav-goal-x+0.30-y-0.20"
    assert video_name(point, {"goal": [0.3, -0.2]}, settings={"seed": 2}) == (
        "Point2DNav-goal-x+0.30-y-0.20_seed=2"
    )
    params = make_family("HalfCheetahParams")
    held_out = params.task_split("default").test
    assert video_name(params, held_out[0], 0) == "HalfCheetahParams-test0"
    assert video_name(params, held_out[0]) == f"HalfCheetahParams-task-{held_out[0].id[:8]}"
    assert "mass x" in task_view(params, held_out[0]).text
    # Unique: every held-out task has its own name, and so do two close custom targets.
    tests = vel.task_split("default").test
    assert len({video_name(vel, t, i) for i, t in enumerate(tests)}) == len(tests)
    assert video_name(vel, {"velocity": 1.301}) != video_name(vel, {"velocity": 1.304})


def test_default_video_paths_name_the_task_and_keep_other_settings_apart(
    runs: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = load_run(runs("maml-trpo"))
    small = {"width": 16, "height": 16, "progress": False, "num_steps": 1, "episodes_per_step": 2}
    first = render_adaptation(run, task_index=2, **small)
    again = render_adaptation(run, task_index=2, seed=1, **small)
    goal = run.family.task_split("default").test[2]["goal"]
    name = f"Point2DNav-goal-x{goal[0]:+.2f}-y{goal[1]:+.2f}-test2"
    name += "_num-adapt-steps=1_episodes-per-step=2"
    assert first == Path("videos") / run.name / f"{name}.mp4"
    assert again == Path("videos") / run.name / f"{name}_seed=1.mp4"
    assert first.is_file() and again.is_file()
    old = load_run(runs("maml-trpo"), checkpoint=2)  # a chosen checkpoint says its iteration
    assert render_adaptation(old, task_index=2, **small).name == f"{name}_iteration=2.mp4"


def test_an_unknown_camera_is_one_line_listing_the_cameras(
    runs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cheetah = str(runs("maml-trpo", env="HalfCheetahDir", horizon=6))
    small = ["--num-adapt-steps", "1", "--width", "32", "--height", "32", "--no-progress"]
    out = tmp_path / "x.mp4"
    assert main(["render", cheetah, "--camera", "nope", "--out", str(out), *small]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "metarl render: error: HalfCheetahDir has no camera 'nope'; it has 'track' (0) "
        "(or give none for the tracking camera)"
    )
    assert main(["render", cheetah, "--camera", "3", "--out", str(out), *small]) == 2
    assert "has no camera 3; it has 'track' (0)" in capsys.readouterr().err
    point = str(runs("maml-trpo"))
    assert main(["render", point, "--camera", "track", "--out", str(out), *small]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Point2DNav is drawn without a MuJoCo scene, so it has no cameras" in line
    assert not out.exists()
    # The model's own camera renders.
    assert main(["render", cheetah, "--camera", "track", "--out", str(out), *small]) == 0
    assert decode(out).shape[1:] == (LABEL_HEIGHT + 32, 2 * 32, 3)
