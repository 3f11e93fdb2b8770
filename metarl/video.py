"""Adaptation videos: a held-out task before adaptation and after each step, side by side.

For a chosen task, panel s shows one deterministic episode (the policy's mean action) of the
stage-s policy: the meta-policy (s = 0), then the policy after s adaptation steps on episodes
from the sampler (MAML-TRPO, Reptile-PPO, as in the meta-test), or, for RL^2, episode s + 1 of
one trial with the recurrent state carried across episodes. Each panel carries a label bar
(stage and running return); a panel whose episode ended holds its last frame.

Rendering is two-pass: the episodes are first played without rendering (recording actions),
then replayed in lockstep, one renderer per panel, so memory does not grow with the video's
length. MuJoCo is deterministic, so the replay is the same episode.

Headless rendering needs an OpenGL backend: :func:`select_gl_backend` picks ``MUJOCO_GL=egl``
and falls back to ``osmesa``, probing each in a subprocess before MuJoCo is imported here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.evaluation import LoadedRun

__all__ = [
    "GL_BACKENDS",
    "Panel",
    "RenderError",
    "compose_frame",
    "play_stages",
    "render_adaptation",
    "select_gl_backend",
]

GL_BACKENDS = ("egl", "osmesa")
"""Headless OpenGL backends tried, in order, when ``MUJOCO_GL`` is not set."""

LABEL_HEIGHT = 24
"""Pixels of the label bar above each panel."""

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
    from metarl.train import make_sampler

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
    if step_sizes is not None and len(step_sizes) < num_steps:
        raise ValueError(
            f"give one step size per adaptation step ({num_steps}), got {list(step_sizes)}"
        )
    seeds = np.random.SeedSequence(seed).generate_state(max(num_steps, 1), dtype=np.uint64)
    panels = []
    policy = agent.exploration_policy(1)
    sampler = make_sampler(FamilyTaskSampler(family), agent.policy)
    try:
        for stage in range(num_steps + 1):
            params = (
                None
                if policy.params is None
                else {k: v[0].detach().cpu() for k, v in policy.params.items()}
            )
            actions, rewards = _play_episode(family, task, _mlp_actor(agent.policy, params), seed)
            panels.append(Panel(_stage_label(stage), actions, rewards))
            if stage == num_steps:
                break
            stacked = (
                None
                if policy.params is None
                else {k: v.detach().cpu() for k, v in policy.params.items()}
            )
            batch = sampler.sample(
                [task], episodes_per_step, params=stacked, seed=int(seeds[stage] >> np.uint64(2))
            )
            lr = None if step_sizes is None else float(step_sizes[stage])
            policy = agent.adapt(policy, batch, lr=lr)
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
        labels: one text per panel (drawn with PIL's built-in font).
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
        ImageDraw.Draw(bar).text((6, 6), text, fill=(255, 255, 255), font=font)
        row.append(np.concatenate([np.asarray(bar), frame], axis=0))
    return np.concatenate(row, axis=1)


def _check_camera(family: Any, camera: str | int | None) -> str | int | None:
    """Validate a camera name or id against the family's model (None: the tracking camera)."""
    if camera is None or not hasattr(family, "model"):
        return camera
    import mujoco

    model = family.model
    if isinstance(camera, str) and camera.lstrip("-").isdigit():
        camera = int(camera)
    if isinstance(camera, int):
        if not -1 <= camera < model.ncam:
            raise ValueError(
                f"{family.name} has cameras 0..{model.ncam - 1} (-1: free camera); got {camera}"
            )
        return camera
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        raise ValueError(
            f"{family.name} has no camera {camera!r}; it has {names} (or give none "
            "for the tracking camera)"
        )
    return camera


def _frames(
    family: Any,
    task: Task,
    panels: Sequence[Panel],
    seed: int,
    width: int,
    height: int,
    camera: str | int | None,
) -> Any:
    """Yield the composed frames of a lockstep replay of ``panels`` (max length of them)."""
    batches = []
    try:
        for _ in panels:
            batch = family.make_batch(1)
            batch.set_tasks([task])
            batch.reset([np.random.default_rng(seed)])
            batches.append(batch)
        last: list[np.ndarray | None] = [None] * len(panels)
        totals = [0.0] * len(panels)
        for t in range(max(p.length for p in panels)):
            for i, (panel, batch) in enumerate(zip(panels, batches, strict=True)):
                if t < panel.length:
                    batch.step(panel.actions[t][None])
                    totals[i] += float(panel.rewards[t])
                    last[i] = batch.render(0, width, height, camera)
            labels = [
                f"{p.label} | return {tot:.1f}" + (" (end)" if t >= p.length - 1 else "")
                for p, tot in zip(panels, totals, strict=True)
            ]
            yield compose_frame([f for f in last if f is not None], labels)
    finally:
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
) -> Path:
    """Render a run's adaptation on one task to an MP4 (and optionally a GIF beside it).

    Args:
        run: from :func:`metarl.evaluation.load_run`.
        task: the task (validated against the family's range); None: held-out test task
            ``task_index`` of the default split.
        task_index: which held-out task when ``task`` is None.
        out: the ``.mp4`` path; default ``videos/<run name>-<task id>.mp4``.
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

    Returns:
        The MP4's path. Files appear only complete: they are written to a temporary file in
        the same folder and renamed; any failure removes the temporary file.

    Raises:
        ValueError: a task outside the family's range, a bad option, an output path that is
            not a writable ``.mp4``.
        RenderError: no headless OpenGL backend works.
    """
    import imageio.v2 as imageio

    from metarl.evaluation import check_writable, write_atomically

    family, agent = run.family, run.agent
    for name, value in (("width", width), ("height", height)):
        if value < 16 or value % 2:
            raise ValueError(
                f"{name} must be an even number of pixels >= 16 (H.264 needs even "
                f"sizes), got {value}"
            )
    if fps is not None and fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if task is None:
        test = family.task_split("default").test
        if not 0 <= task_index < len(test):
            raise ValueError(
                f"task_index must be in [0, {len(test)}) (the held-out tasks of "
                f"{family.name}), got {task_index}"
            )
        task = test[task_index]
    chosen = family.validate_task(task)
    camera = _check_camera(family, camera)
    out_path = Path(out) if out is not None else Path("videos") / f"{run.name}-{chosen.id}.mp4"
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
    if hasattr(family, "model"):
        select_gl_backend()
    # Real time where the env is fast enough to watch; Point2DNav (dt = 1) at 10 fps.
    fps = fps if fps is not None else min(max(round(1.0 / family.dt), 10), 60)

    panels = play_stages(run, chosen, num_steps, episodes_per_step, seed, step_sizes)
    total = max(p.length for p in panels)
    gif_every = max(1, round(fps / 10))
    gif_frames: list[Any] = []

    def write_mp4(tmp: Path) -> None:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total, desc=f"render {out_path.name}", unit="frame", dynamic_ncols=True
            )
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
            for t, frame in enumerate(_frames(family, chosen, panels, seed, width, height, camera)):
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
