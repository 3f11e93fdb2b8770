"""Adaptation videos: a held-out task before adaptation and after each step, side by side.

For a chosen task, panel s shows one deterministic episode (the policy's mean action) of the
stage-s policy: the meta-policy (s = 0), then the policy after s adaptation steps on episodes
from the sampler (MAML-TRPO, Reptile-PPO, as in the meta-test), or, for RL^2, episode s + 1 of
one trial with the recurrent state carried across episodes. Each panel carries a label bar:
the stage and running return, then the task (target velocity, direction or goal) and what the
robot does about it (its speed over the last half second, or its distance to the goal). The
target is drawn where it has a place: a goal marker (Point2DNav draws its own goal), a
direction arrow on the floor ahead of the robot. A panel whose episode ended holds its last
frame.

Videos are named after the family and the task (``HalfCheetahVel-velocity-1.30.mp4``;
held-out task ``i`` adds ``-test<i>``, and settings other than the defaults are appended as
``_flag=value``), in a folder per run under ``videos/``.

Rendering is two-pass: the episodes are first played without rendering (recording actions),
then replayed in lockstep, one renderer per panel, so memory does not grow with the video's
length. MuJoCo is deterministic, so the replay is the same episode.

Headless rendering needs an OpenGL backend: :func:`select_gl_backend` picks ``MUJOCO_GL=egl``
and falls back to ``osmesa``, probing each in a subprocess before MuJoCo is imported here.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.progress import progress_bar
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.evaluation import LoadedRun

__all__ = [
    "GL_BACKENDS",
    "Panel",
    "RenderError",
    "TaskView",
    "compose_frame",
    "play_stages",
    "render_adaptation",
    "select_gl_backend",
    "task_view",
    "video_name",
]

GL_BACKENDS = ("egl", "osmesa")
"""Headless OpenGL backends tried, in order, when ``MUJOCO_GL`` is not set."""

LABEL_HEIGHT = 36
"""Pixels of the label bar above each panel (two lines of text)."""
LINE_SPACING = 15
"""Pixels from one line of a label's text to the next."""
GOAL_RGBA = (0.9, 0.1, 0.1, 1.0)
"""Colour of a goal marker in a MuJoCo scene (red)."""
ARROW_RGBA = (0.1, 0.85, 0.2, 1.0)
"""Colour of a direction arrow in a MuJoCo scene (green)."""
READOUT_SECONDS = 0.5
"""The live speed is the mean over this much simulated time (a single step's is jittery)."""

_PROBE = (
    "import mujoco\n"
    "xml = '<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>'\n"
    "m = mujoco.MjModel.from_xml_string(xml)\n"
    "r = mujoco.Renderer(m, 16, 16)\n"
    "r.update_scene(mujoco.MjData(m))\n"
    "r.render()\n"
    "r.close()\n"
)


class RenderError(RuntimeError):
    """No headless OpenGL backend works (or another reason frames cannot be made)."""


def _probe(backend: str) -> str | None:
    """None if a MuJoCo renderer works with ``MUJOCO_GL=backend``, else the error's last line."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def select_gl_backend() -> str:
    """Choose and set ``MUJOCO_GL`` for headless rendering; returns the backend's name.

    An explicit ``MUJOCO_GL`` is kept. Otherwise ``egl`` then ``osmesa`` are probed in a
    subprocess and the first that renders is set (with ``PYOPENGL_PLATFORM``). MuJoCo reads
    the variable when it is imported, so call this before anything imports ``mujoco``.

    Raises:
        RenderError: no backend renders (the message lists what was tried and how to install
            one), or MuJoCo was already imported without ``MUJOCO_GL``.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    errors = {}
    for backend in GL_BACKENDS:
        error = _probe(backend)
        if error is not None:
            errors[backend] = error
            continue
        if "mujoco" in sys.modules:
            raise RenderError(
                "MuJoCo was imported before MUJOCO_GL was set, so it cannot render headless "
                f"now; set MUJOCO_GL={backend} (it works on this machine) before starting Python"
            )
        os.environ["MUJOCO_GL"] = backend
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
        return backend
    tried = "; ".join(f"{b}: {e}" for b, e in errors.items())
    raise RenderError(
        f"no headless OpenGL backend works for MuJoCo (tried {tried}). Install EGL "
        "(e.g. apt-get install libegl1, with a GPU driver or Mesa) or OSMesa "
        "(apt-get install libosmesa6), or set MUJOCO_GL to a backend that works"
    )


# --------------------------------------------------------------------------------------------
# Playing the stages (no rendering)
# --------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """One deterministic episode of one stage.

    Attributes:
        label: what the panel shows (``"before adaptation"``, ``"after 1 step"``,
            ``"episode 2"``).
        actions: ``[T, act_dim]`` the actions played (already clipped to the action space).
        rewards: ``[T]`` the rewards received.
    """

    label: str
    actions: np.ndarray
    rewards: np.ndarray

    @property
    def length(self) -> int:
        return len(self.rewards)

    @property
    def total(self) -> float:
        return float(self.rewards.sum())


def _play_episode(
    family: Any,
    task: Task,
    act: Callable[[np.ndarray], np.ndarray],
    seed: int,
    on_step: Callable[[np.ndarray, float, bool], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One episode of ``act`` on ``task``: ``(clipped actions [T, A], rewards [T])``."""
    batch = family.make_batch(1)
    try:
        batch.set_tasks([task])
        obs = batch.reset([np.random.default_rng(seed)])[0]
        low, high = family.action_space.low, family.action_space.high
        actions, rewards = [], []
        for t in range(family.horizon):
            raw = np.asarray(act(obs), dtype=np.float64)
            action = np.clip(raw, low, high)
            result = batch.step(action[None])
            obs = result.obs[0]
            reward = float(result.reward[0])
            done = bool(result.terminated[0]) or t + 1 == family.horizon
            actions.append(action)
            rewards.append(reward)
            if on_step is not None:
                on_step(raw, reward, done)
            if done:
                break
    finally:
        batch.close()
    return np.asarray(actions), np.asarray(rewards)


def _mlp_actor(policy: Any, params: Mapping[str, Any] | None) -> Callable[[np.ndarray], np.ndarray]:
    import torch
    from torch.func import functional_call

    def act(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        with torch.no_grad():
            if params is None:
                mean, _ = policy(x)
            else:
                mean, _ = functional_call(policy, dict(params), (x,))
        return mean[0].cpu().numpy()

    return act


def _stage_label(stage: int) -> str:
    if stage == 0:
        return "before adaptation"
    return f"after {stage} step" + ("s" if stage > 1 else "")


def play_stages(
    run: LoadedRun,
    task: Task,
    num_steps: int,
    episodes_per_step: int,
    seed: int = 0,
    step_sizes: Sequence[float] | None = None,
) -> list[Panel]:
    """The ``num_steps + 1`` deterministic episodes of a video, played without rendering.

    Gradient agents adapt between stages on ``episodes_per_step`` sampled episodes (seeded
    from ``seed``); RL^2 plays one trial of ``num_steps + 1`` episodes. Every episode resets
    from the same ``seed``, so the panels differ only by the policy.

    Raises:
        ValueError: a task outside the family's range, or impossible counts.
    """
    from metarl.family import FamilyTaskSampler
    from metarl.sampling import make_sampler

    if num_steps < 0 or episodes_per_step < 1:
        raise ValueError(
            f"num_steps must be >= 0 and episodes_per_step >= 1, got {num_steps}, "
            f"{episodes_per_step}"
        )
    agent, family = run.agent, run.family
    task = family.validate_task(task)
    if agent.recurrent:
        return _play_trial(run, task, num_steps, seed)
    takes_lr = agent.takes_step_size
    if step_sizes is not None and not takes_lr:
        raise ValueError(
            f"{run.algo} adapts with its own optimizer: step sizes apply to maml-trpo only"
        )
    panels = []
    sampler = make_sampler(FamilyTaskSampler(family), agent.policy)
    try:
        stages = agent.adaptation_stages(
            sampler, [task], num_steps, episodes_per_step, seed, step_sizes, sample_last=False
        )
        for stage, (policy, _) in enumerate(stages):
            params = (
                None
                if policy.params is None
                else {k: v[0].detach().cpu() for k, v in policy.params.items()}
            )
            actions, rewards = _play_episode(family, task, _mlp_actor(agent.policy, params), seed)
            panels.append(Panel(_stage_label(stage), actions, rewards))
    finally:
        sampler.close()
    return panels


def _play_trial(run: LoadedRun, task: Task, num_steps: int, seed: int) -> list[Panel]:
    """RL^2: one trial of ``num_steps + 1`` episodes, the state carried across them."""
    import torch

    policy = run.agent.policy
    act_dim = run.family.action_space.shape[0]
    state = policy.initial_state(1)  # type: ignore[operator]
    prev: dict[str, Any] = {"action": np.zeros(act_dim), "reward": 0.0, "done": 0.0}

    def act(obs: np.ndarray) -> np.ndarray:
        nonlocal state
        x = np.concatenate([obs, prev["action"], [prev["reward"], prev["done"]]])
        inputs = torch.as_tensor(x, dtype=torch.float32).unsqueeze(0)
        with torch.no_grad():
            mean, _, state = policy(inputs, state)
        return mean[0].cpu().numpy()

    def on_step(raw: np.ndarray, reward: float, done: bool) -> None:
        # The next input reads the unclipped action, as the sampler feeds it.
        prev.update(action=raw.astype(np.float64), reward=reward, done=float(done))

    panels = []
    for episode in range(num_steps + 1):
        actions, rewards = _play_episode(run.family, task, act, seed, on_step)
        panels.append(Panel(f"episode {episode + 1}", actions, rewards))
    return panels


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def compose_frame(panels: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Panels side by side, each under a label bar: ``[LABEL_HEIGHT + H, n * W, 3]`` uint8.

    Args:
        panels: n frames ``[H, W, 3]`` uint8 of one size.
        labels: one text per panel (drawn with PIL's built-in font), at most two lines
            separated by ``"\\n"``.
    """
    from PIL import Image, ImageDraw, ImageFont

    if len(panels) != len(labels) or not panels:
        raise ValueError(
            f"need one label per panel, got {len(panels)} panels and {len(labels)} labels"
        )
    height, width = panels[0].shape[:2]
    font = ImageFont.load_default()
    row = []
    for frame, text in zip(panels, labels, strict=True):
        if frame.shape != (height, width, 3):
            raise ValueError(f"panels must all be {(height, width, 3)}, got {frame.shape}")
        bar = Image.new("RGB", (width, LABEL_HEIGHT), (30, 30, 30))
        draw = ImageDraw.Draw(bar)
        for i, line in enumerate(text.split("\n")[:2]):
            draw.text((6, 4 + i * LINE_SPACING), line, fill=(255, 255, 255), font=font)
        row.append(np.concatenate([np.asarray(bar), frame], axis=0))
    return np.concatenate(row, axis=1)


# --------------------------------------------------------------------------------------------
# What a panel says about its task
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    """How a video shows one task.

    Attributes:
        text: the task for the label bar (``"target 1.30 m/s"``, ``"goal (0.30, -0.20)"``).
        slug: the task in a file name (``"velocity-1.30"``); empty where the task has no short
            form (the dynamics families' arrays of scales).
        kind: ``"velocity"``, ``"direction"``, ``"goal"`` or ``"other"``: what the live
            readout measures (speed, speed along the direction, distance to the goal, speed).
        direction: unit ``[2]`` direction in the ground plane (direction tasks), else None.
        goal: ``[2]`` goal position in the ground plane (goal tasks), else None.
    """

    text: str
    slug: str
    kind: str
    direction: np.ndarray | None = None
    goal: np.ndarray | None = None


def _num(value: float, exact: bool, signed: bool = False) -> str:
    """``value`` with 2 decimals, or (``exact``) with as many as it needs, up to 6 digits;
    ``signed``: always with its sign (``+0.30``)."""
    sign = "+" if signed else ""
    if not exact or abs(value - round(value, 2)) < 1e-9:
        return f"{value:{sign}.2f}"
    return f"{value:{sign}.6g}"


def _compass(angle: float, exact: bool) -> str:
    """An angle (rad) in whole degrees, or (``exact``) as precisely as it was given."""
    degrees = math.degrees(angle) % 360.0
    if exact and abs(degrees - round(degrees)) > 1e-6:
        return f"{degrees:.6g}deg"
    return f"{degrees:.0f}deg"


def task_view(family: Any, task: Mapping[str, Any], exact: bool = False) -> TaskView:
    """How the videos of ``family`` show ``task``.

    ``velocity`` tasks are a target speed; ``direction`` tasks (+1/-1, or an angle in radians
    where the family's ``direction`` is one) and ``angle`` tasks a direction; ``goal`` tasks a
    position; Meta-World's tasks their env and goal index; small tasks of scalars list
    themselves; others (arrays of dynamics scales) summarize their first arrays by range.

    Args:
        family: the task family.
        task: one of its tasks.
        exact: numbers in ``slug`` as given (a user's ``--task``), not at 2 decimals (a
            held-out task, whose name also carries its index).
    """
    specs = family.param_specs() if callable(getattr(family, "param_specs", None)) else {}
    keys = set(task)
    if keys == {"velocity"}:
        v = float(task["velocity"])
        return TaskView(f"target {v:.2f} m/s", f"velocity-{_num(v, exact)}", "velocity")
    if keys in ({"direction"}, {"angle"}):
        (key,) = keys
        value = float(task[key])
        spec = specs.get(key)
        if key == "direction" and spec is not None and set(spec.choices) == {-1.0, 1.0}:
            word = "forward" if value > 0 else "backward"
            sign = "+x" if value > 0 else "-x"
            return TaskView(
                f"target: {word} ({sign})",
                f"direction-{word}",
                "direction",
                direction=np.array([1.0 if value > 0 else -1.0, 0.0]),
            )
        return TaskView(
            f"target: direction {math.degrees(value) % 360.0:.0f} deg",
            f"{key}-{_compass(value, exact)}",
            "direction",
            direction=np.array([math.cos(value), math.sin(value)]),
        )
    if keys == {"goal"} and np.shape(task["goal"]) == (2,):
        g = np.asarray(task["goal"], dtype=np.float64)
        slug = f"goal-x{_num(g[0], exact, signed=True)}-y{_num(g[1], exact, signed=True)}"
        return TaskView(f"goal ({g[0]:.2f}, {g[1]:.2f})", slug, "goal", goal=g)
    if {"env_name", "index"} <= keys:  # Meta-World: an env and one of its goals
        split = f"{task['split']}-" if "split" in task else ""
        text = f"{task['env_name']} goal {task['index']}"
        return TaskView(text, f"{task['env_name']}-{split}goal{task['index']}", "other")
    scalars = {k: v for k, v in task.items() if np.ndim(v) == 0}
    if scalars == dict(task) and len(scalars) <= 4:

        def show(v: Any) -> str:
            return _num(float(v), exact) if isinstance(v, float | np.floating) else str(v)

        text = ", ".join(f"{k} {show(v)}" for k, v in scalars.items())
        slug = "_".join(f"{k}-{show(v)}" for k, v in scalars.items())
        return TaskView(text, slug, "other")
    ranges: list[str] = []
    # Masses and frictions first: what a viewer can tell apart in a video.
    order = sorted(task, key=lambda k: ("mass" not in k, "friction" not in k, k))
    for key in order:
        value = task[key]
        if np.ndim(value) > 0 and np.size(value) > 0 and len(ranges) < 2:
            name = key.removesuffix("_scale").split("_")[-1]
            arr = np.asarray(value, dtype=np.float64)
            ranges.append(f"{name} x{arr.min():.2f}-{arr.max():.2f}")
    return TaskView(", ".join(ranges) or "task " + Task(task).id[:8], "", "other")


def video_name(
    family: Any,
    task: Mapping[str, Any],
    task_index: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """The file name (no suffix) of a video of ``task``: the family, the task, ``-test<i>``
    for held-out task ``i``, then the settings that differ from the defaults as
    ``_flag=value`` (``HalfCheetahVel-velocity-0.28-test3_seed=2``).

    A task with no short form (the dynamics families) is named by its held-out index, or by
    its id (a hash) when it is not a held-out one.
    """
    from metarl.evaluation import settings_name

    view = task_view(family, task, exact=task_index is None)
    slug = view.slug
    if not slug and task_index is None:
        slug = "task-" + Task(task).id[:8]
    name = family.name + (f"-{slug}" if slug else "")
    if task_index is not None:
        name += f"-test{task_index}"
    return settings_name(name, dict(settings or {}))


class _Readout:
    """The live line of a panel: what the robot does about its task, from each step's
    ``info`` and reward terms (speeds averaged over :data:`READOUT_SECONDS`)."""

    def __init__(self, view: TaskView, dt: float) -> None:
        self.view = view
        self._window = max(1, round(READOUT_SECONDS / dt))
        self._speeds: list[float] = []
        self._success = False
        self.text = ""

    def update(self, step: Any) -> str:
        info, terms = step.info, step.terms
        view = self.view
        if view.kind == "goal":
            if "x_position" in info and "y_position" in info and view.goal is not None:
                xy = np.array([float(info["x_position"][0]), float(info["y_position"][0])])
                self.text = f"distance {float(np.linalg.norm(xy - view.goal)):.2f} m"
            elif "reward_distance" in terms:  # Point2DNav: the reward is minus the distance
                self.text = f"distance {-float(terms['reward_distance'][0]):.2f}"
        elif "x_velocity" in info:
            v = np.array([float(info["x_velocity"][0]), float(info.get("y_velocity", [0.0])[0])])
            speed = float(v @ view.direction) if view.direction is not None else float(v[0])
            self._speeds = [*self._speeds, speed][-self._window :]
            mean = float(np.mean(self._speeds))
            if view.kind == "direction":
                self.text = f"speed that way {mean:+.2f} m/s"
            else:
                self.text = f"speed {mean:.2f} m/s"
        if "success" in info:
            self._success = self._success or bool(np.asarray(info["success"])[0] > 0)
            self.text = "succeeded" if self._success else "not yet succeeded"
        return self.text


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def _camera_names(model: Any) -> list[str]:
    import mujoco

    names = []
    for i in range(model.ncam):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i)
        names.append(f"{name!r} ({i})" if name else f"{i} (unnamed)")
    return names


def _scene_model(family: Any, task: Task) -> Any:
    """The MuJoCo model a family's videos show (None: it draws its frames without MuJoCo)."""
    if hasattr(family, "model"):
        return family.model
    batch = family.make_batch(1)
    try:
        batch.set_tasks([task])
        envs = getattr(batch, "envs", None) or [None]
        model = getattr(getattr(envs[0], "unwrapped", None), "model", None)
    finally:
        batch.close()
    import mujoco

    return model if isinstance(model, mujoco.MjModel) else None


def _check_camera(family: Any, camera: str | int | None, task: Task) -> str | int | None:
    """Validate a camera name or id against the model the videos show (None: tracking).

    Raises:
        ValueError: an unknown camera (naming the model's cameras), or any camera for a
            family drawn without MuJoCo (Point2DNav).
    """
    if camera is None:
        return None
    model = _scene_model(family, task)
    if model is None:
        raise ValueError(
            f"{family.name} is drawn without a MuJoCo scene, so it has no cameras: leave out "
            f"--camera (got {camera!r})"
        )
    import mujoco

    if isinstance(camera, str) and camera.lstrip("-").isdigit():
        camera = int(camera)
    if isinstance(camera, int):
        if not -1 <= camera < model.ncam:
            raise ValueError(
                f"{family.name} has no camera {camera}; it has {', '.join(_camera_names(model))} "
                "(-1: the free camera; none: the tracking camera)"
            )
        return camera
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
        raise ValueError(
            f"{family.name} has no camera {camera!r}; it has {', '.join(_camera_names(model))} "
            "(or give none for the tracking camera)"
        )
    return camera


class _PanelScene:
    """Frames of env 0 of one panel's batch, with the task's target drawn into the scene.

    A batch of MuJoCo families (its ``models`` and ``datas``) is rendered here, as the
    batch itself would (a camera tracking body 1, or ``camera``), plus a goal marker and a
    direction arrow; any other batch (Point2DNav, Gymnasium envs) renders its own frames.
    """

    def __init__(
        self,
        family: Any,
        batch: Any,
        view: TaskView,
        width: int,
        height: int,
        camera: str | int | None,
        markers: bool,
    ) -> None:
        self.batch, self.view, self.camera = batch, view, camera
        self.size = (width, height)
        self._renderer: Any = None
        self._mujoco = markers and hasattr(batch, "models") and hasattr(batch, "datas")
        if self._mujoco:
            import mujoco

            model = batch.models[0]
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
            self._renderer = mujoco.Renderer(model, height=height, width=width)
            self._distance = float(getattr(family, "camera_distance", 4.0))

    def render(self) -> np.ndarray:
        if not self._mujoco:
            return self.batch.render(0, self.size[0], self.size[1], self.camera)
        import mujoco

        data = self.batch.datas[0]
        camera: Any = self.camera
        if camera is None:  # the batch's own default view
            camera = mujoco.MjvCamera()
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            camera.trackbodyid = 1
            camera.distance = self._distance
            camera.elevation = -20.0
        self._renderer.update_scene(data, camera=camera)
        scene = self._renderer.scene
        robot = np.asarray(data.xpos[1], dtype=np.float64)  # the tracked body
        if self.view.goal is not None and scene.ngeom < scene.maxgeom:
            # A post at the goal, tall enough to be seen from afar.
            geom = scene.geoms[scene.ngeom]
            pos = np.array([self.view.goal[0], self.view.goal[1], 0.5])
            mujoco.mjv_initGeom(
                geom,
                mujoco.mjtGeom.mjGEOM_CYLINDER,
                np.array([0.08, 0.5, 0.0]),
                pos,
                np.eye(3).reshape(-1),
                np.asarray(GOAL_RGBA, dtype=np.float32),
            )
            scene.ngeom += 1
        if self.view.direction is not None and scene.ngeom < scene.maxgeom:
            # An arrow on the floor from just ahead of the robot along the target direction.
            geom = scene.geoms[scene.ngeom]
            ahead = np.array([*self.view.direction, 0.0])
            start = np.array([robot[0], robot[1], 0.05]) + 0.2 * ahead
            end = start + ahead
            mujoco.mjv_initGeom(
                geom,
                mujoco.mjtGeom.mjGEOM_ARROW,
                np.zeros(3),
                np.zeros(3),
                np.zeros(9),
                np.asarray(ARROW_RGBA, dtype=np.float32),
            )
            mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_ARROW, 0.08, start, end)
            scene.ngeom += 1
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _frames(
    family: Any,
    task: Task,
    panels: Sequence[Panel],
    seed: int,
    width: int,
    height: int,
    camera: str | int | None,
    overlay: bool = True,
) -> Any:
    """Yield the composed frames of a lockstep replay of ``panels`` (max length of them).

    With ``overlay``, each label bar's second line says the task and the live readout, and
    the scene shows the target (see :class:`_PanelScene`).
    """
    view = task_view(family, task)
    batches: list[Any] = []
    scenes: list[_PanelScene] = []
    try:
        for _ in panels:
            batch = family.make_batch(1)
            batches.append(batch)
            batch.set_tasks([task])
            batch.reset([np.random.default_rng(seed)])
            scenes.append(_PanelScene(family, batch, view, width, height, camera, overlay))
        readouts = [_Readout(view, float(family.dt)) for _ in panels]
        last: list[np.ndarray | None] = [None] * len(panels)
        totals = [0.0] * len(panels)
        for t in range(max(p.length for p in panels)):
            for i, (panel, batch) in enumerate(zip(panels, batches, strict=True)):
                if t < panel.length:
                    step = batch.step(panel.actions[t][None])
                    totals[i] += float(panel.rewards[t])
                    readouts[i].update(step)
                    last[i] = scenes[i].render()
            labels = []
            for p, tot, readout in zip(panels, totals, readouts, strict=True):
                label = f"{p.label} | return {tot:.1f}" + (" (end)" if t >= p.length - 1 else "")
                if overlay:
                    label += "\n" + " | ".join(x for x in (view.text, readout.text) if x)
                labels.append(label)
            yield compose_frame([f for f in last if f is not None], labels)
    finally:
        for scene in scenes:
            scene.close()
        for batch in batches:
            batch.close()


def render_adaptation(
    run: LoadedRun,
    task: Task | Mapping[str, Any] | None = None,
    task_index: int = 0,
    out: str | Path | None = None,
    num_steps: int | None = None,
    episodes_per_step: int | None = None,
    step_sizes: Sequence[float] | None = None,
    width: int = 320,
    height: int = 240,
    fps: int | None = None,
    camera: str | int | None = None,
    seed: int = 0,
    gif: bool = False,
    progress: bool = True,
    overlay: bool = True,
) -> Path:
    """Render a run's adaptation on one task to an MP4 (and optionally a GIF beside it).

    Args:
        run: from :func:`metarl.evaluation.load_run`.
        task: the task (validated against the family's range); None: held-out test task
            ``task_index`` of the default split.
        task_index: which held-out task when ``task`` is None.
        out: the ``.mp4`` path; default ``videos/<run name>/<name>.mp4``, the name from
            :func:`video_name` (family, task, held-out index, settings other than the
            defaults: ``num-adapt-steps``, ``episodes-per-step``, ``step-sizes``, ``seed``,
            ``camera``, and ``iteration`` for a checkpoint other than the latest).
        num_steps: adaptation steps K (K + 1 panels); default: the agent's trained
            ``num_adapt_steps``, or for RL^2 ``episodes_per_trial - 1``.
        episodes_per_step: sampled episodes per adaptation step; default the agent's
            ``episodes_per_task``.
        step_sizes: per-step step sizes (MAML-TRPO only); default its ``adapt_lr``.
        width, height: panel size in pixels (even, >= 16).
        fps: frames per second; default the env's real time (1 / dt).
        camera: a MuJoCo camera name or id; None: a camera tracking the robot.
        seed: seeds the episodes' initial states and the adaptation episodes.
        gif: also write ``<out>.gif`` (every frame at up to 10 fps).
        progress: show a progress bar over the frames.
        overlay: write the task and the live speed or distance in each label bar and draw
            the target in the scene (see :func:`task_view`); False: the stage and return only.

    Returns:
        The MP4's path. Files appear only complete: they are written to a temporary file in
        the same folder and renamed; any failure removes the temporary file.

    Raises:
        ValueError: a task outside the family's range, a bad option, an unknown camera (the
            message lists the model's cameras), an output path that is not a writable
            ``.mp4``.
        RenderError: no headless OpenGL backend works.
    """
    import imageio.v2 as imageio

    from metarl.evaluation import check_writable
    from metarl.runs import LATEST, write_atomically

    family, agent = run.family, run.agent
    for name, value in (("width", width), ("height", height)):
        if value < 16 or value % 2:
            raise ValueError(
                f"{name} must be an even number of pixels >= 16 (H.264 needs even "
                f"sizes), got {value}"
            )
    if fps is not None and fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    held_out: int | None = None
    if task is None:
        test = family.task_split("default").test
        if not 0 <= task_index < len(test):
            raise ValueError(
                f"task_index must be in [0, {len(test)}) (the held-out tasks of "
                f"{family.name}), got {task_index}"
            )
        task, held_out = test[task_index], task_index
    chosen = family.validate_task(task)
    if hasattr(family, "model") or camera is not None:
        select_gl_backend()
    camera = _check_camera(family, camera, chosen)
    if out is None:
        settings: dict[str, Any] = {
            "num-adapt-steps": num_steps,
            "episodes-per-step": episodes_per_step,
            "step-sizes": None if step_sizes is None else tuple(float(v) for v in step_sizes),
            "seed": seed or None,
            "camera": camera,
            "iteration": None if Path(run.checkpoint).name == LATEST else run.iteration,
        }
        given = {k: v for k, v in settings.items() if v is not None}
        name = video_name(family, chosen, held_out, given)
        out_path = Path("videos") / run.name / f"{name}.mp4"
    else:
        out_path = Path(out)
    if out_path.suffix.lower() != ".mp4":
        raise ValueError(f"the video is written as MP4: give a path ending in .mp4, got {out_path}")
    check_writable(out_path.parent)
    cfg: Any = agent.config
    recurrent = bool(getattr(agent.policy, "recurrent", False))
    if num_steps is None:
        num_steps = (
            int(cfg.episodes_per_trial) - 1
            if recurrent
            else int(getattr(cfg, "num_adapt_steps", 1))
        )
    if episodes_per_step is None:
        episodes_per_step = int(getattr(cfg, "episodes_per_task", 1))
    # Real time where the env is fast enough to watch; Point2DNav (dt = 1) at 10 fps.
    fps = fps if fps is not None else min(max(round(1.0 / family.dt), 10), 60)

    panels = play_stages(run, chosen, num_steps, episodes_per_step, seed, step_sizes)
    total = max(p.length for p in panels)
    gif_every = max(1, round(fps / 10))
    gif_frames: list[Any] = []

    def write_mp4(tmp: Path) -> None:
        bar = progress_bar(progress, total, f"render {out_path.name}", "frame")
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        try:
            frames = _frames(family, chosen, panels, seed, width, height, camera, overlay)
            for t, frame in enumerate(frames):
                writer.append_data(frame)
                if gif and t % gif_every == 0:
                    gif_frames.append(frame)
                if bar is not None:
                    bar.update(1)
        finally:
            writer.close()
            if bar is not None:
                bar.close()

    try:
        write_atomically(out_path, write_mp4)
    except Exception as exc:
        if isinstance(exc, ValueError | RenderError):
            raise
        raise RenderError(f"rendering {out_path} failed: {type(exc).__name__}: {exc}") from exc
    if gif:
        duration = 1000.0 * gif_every / fps
        write_atomically(
            out_path.with_suffix(".gif"),
            lambda tmp: imageio.mimsave(tmp, gif_frames, format="GIF", duration=duration, loop=0),
        )
    return out_path
