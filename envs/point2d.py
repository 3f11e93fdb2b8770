"""Point2DNav: a point in the plane moves to a goal (pure numpy, no MuJoCo).

The cheap family for fast tests and quick learning checks, after pytorch-maml-rl's
``Navigation2DEnv`` (Finn et al. 2017, Sec. 5.2): the state starts at (0, 0); an action is a
displacement clipped to [-0.1, 0.1] per axis and added to the state; the reward is
``-||s - g||_2`` after the move; the episode terminates once both ``|s_x - g_x| < 0.01`` and
``|s_y - g_y| < 0.01``. Goals ``g ~ U[-0.5, 0.5]^2``; H = 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl.envs.base import Array, BatchStep, BatchStepper, ParamSpec, TaskFamily, Variant

__all__ = ["Point2DBatch", "Point2DNav"]

GOAL_LIMIT = 0.5
"""Goals lie in ``[-GOAL_LIMIT, GOAL_LIMIT]^2``."""
MAX_STEP = 0.1
"""Per-axis bound of an action (a displacement in plane units)."""
GOAL_TOLERANCE = 0.01
"""The episode ends when both coordinates are within this distance of the goal."""


class Point2DNav(TaskFamily):
    """Navigate a point mass to a goal in the plane.

    Task: ``{"goal": [g_x, g_y]}``, each in [-0.5, 0.5]. Default task: goal (0, 0) (the middle
    of the range). Observation: the position ``[2]`` (float64). Action: a displacement ``[2]``
    clipped to [-0.1, 0.1] per axis. Reward: ``-||s - g||_2`` after the move (term
    ``reward_distance``). ``dt`` = 1 (one step is one unit of time).

    Variants:
        ``maml``: H = 100 (pytorch-maml-rl ``2d-navigation-v0``): the action is the
            displacement itself, in [-0.1, 0.1] per axis.
        ``maml-rllab``: H = 100, the paper's own code (cbfinn/maml_rl ``maml_trpo_point.py``
            wraps the env in rllab's ``normalize``): the action lies in [-1, 1] per axis and
            the displacement is ``clip(0.1 * action, -0.1, 0.1)``. The same task and reward;
            a policy's unit-scale exploration noise then covers the action range instead of
            saturating it, so this is the variant the published numbers are comparable with.
    """

    name: ClassVar[str] = "Point2DNav"
    default_variant: ClassVar[str] = "maml"
    variants: ClassVar[dict[str, Variant]] = {
        "maml": Variant(
            horizon=100,
            source="Finn et al. 2017 (MAML) Sec. 5.2; tristandeleu/pytorch-maml-rl "
            "maml_rl/envs/navigation.py (Navigation2DEnv)",
        ),
        "maml-rllab": Variant(
            horizon=100,
            source="cbfinn/maml_rl maml_examples/maml_trpo_point.py and point_env_randgoal.py "
            "under rllab's normalize(): actions in [-1, 1] scaled into [-0.1, 0.1]",
            options={"action_scale": MAX_STEP},
        ),
    }

    def __init__(self, variant: str | None = None, horizon: int | None = None) -> None:
        super().__init__(variant=variant, horizon=horizon)
        self.action_scale: float | None = self.variants[self.variant].options.get("action_scale")
        """Displacement per unit of action (``maml-rllab``); None: the action is the
        displacement."""
        bound = MAX_STEP if self.action_scale is None else MAX_STEP / self.action_scale
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-bound, bound, shape=(2,), dtype=np.float32)

    def param_specs(self) -> dict[str, ParamSpec]:
        return {
            "goal": ParamSpec(
                shape=(2,), low=-GOAL_LIMIT, high=GOAL_LIMIT, doc="goal position (plane units)"
            )
        }

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        goals = rng.uniform(-GOAL_LIMIT, GOAL_LIMIT, size=(n, 2))
        return [{"goal": g} for g in goals]

    def make_batch(self, num_envs: int) -> Point2DBatch:
        return Point2DBatch(self, num_envs)


class Point2DBatch(BatchStepper):
    """N points stepped together with numpy (no per-env Python loop).

    Keeps each env's positions since its last reset (at most ``horizon + 1`` of them, the
    oldest overwritten first) so that :meth:`render` can draw the trajectory.
    """

    family: Point2DNav

    def __init__(self, family: Point2DNav, num_envs: int) -> None:
        super().__init__(family, num_envs)
        self.state = np.zeros((self.num_envs, 2))
        self._trail_len = family.horizon + 1
        self._trail = np.zeros((self.num_envs, self._trail_len, 2))
        self._trail_count = np.ones(self.num_envs, dtype=np.int64)

    def reset(
        self, rngs: Sequence[np.random.Generator], indices: Sequence[int] | None = None
    ) -> Array:
        """Put the selected envs at (0, 0); ``rngs`` are checked but unused (no reset noise)."""
        idx = self._indices(indices)
        self._check_rngs(rngs, len(idx))
        self.state[idx] = 0.0
        self._trail[idx] = 0.0
        self._trail_count[idx] = 1
        return self.state[idx].copy()

    def step(self, actions: Array, indices: Sequence[int] | None = None) -> BatchStep:
        """Move env ``indices[j]`` by ``clip(actions[j], -0.1, 0.1)`` (``maml-rllab``: by
        ``clip(0.1 * actions[j], -0.1, 0.1)``); returns ``[n, ...]`` rows."""
        idx = self._indices(indices)
        actions = self._check_actions(actions, len(idx))
        if self.family.action_scale is not None:
            actions = actions * self.family.action_scale
        state = self.state[idx] + np.clip(actions, -MAX_STEP, MAX_STEP)
        self.state[idx] = state
        self._trail[idx, self._trail_count[idx] % self._trail_len] = state
        self._trail_count[idx] += 1
        delta = state - self._params["goal"][idx]
        terms = {"reward_distance": -np.sqrt(np.sum(np.square(delta), axis=1))}
        terminated = np.all(np.abs(delta) < GOAL_TOLERANCE, axis=1)
        return BatchStep(
            obs=state.copy(),
            reward=terms["reward_distance"].copy(),
            terminated=terminated,
            terms=terms,
            info={},
        )

    def trajectory(self, index: int) -> Array:
        """Positions of env ``index`` since its last reset, oldest first, ``[k, 2]``."""
        count = int(self._trail_count[index])
        if count <= self._trail_len:
            return self._trail[index, :count].copy()
        start = count % self._trail_len
        return np.roll(self._trail[index], -start, axis=0)

    def render(
        self,
        index: int,
        width: int = 480,
        height: int = 480,
        camera: Any = None,
        trajectory: bool = True,
    ) -> Array:
        """A top view of env ``index``: goal (green), agent (blue), its path (light blue).

        Args:
            index: which env.
            width, height: frame size in pixels.
            camera: unused (no 3-D scene); accepted for the :class:`BatchStepper` interface.
            trajectory: also draw the positions since the last reset.

        Returns:
            ``[height, width, 3]`` uint8 RGB frame; the view spans at least [-0.6, 0.6]^2 and
            widens to keep the agent in sight.
        """
        if not 0 <= index < self.num_envs:
            raise IndexError(f"env index must lie in [0, {self.num_envs}), got {index}")
        if width < 8 or height < 8:
            raise ValueError(f"render needs a frame of at least 8x8 pixels, got {width}x{height}")
        goal = self._params["goal"][index]
        path = self.trajectory(index)
        pos = self.state[index]
        half = max(1.2 * GOAL_LIMIT, 1.1 * float(np.max(np.abs(np.concatenate([path, [goal]])))))
        scale = 0.5 * min(width, height) / half  # pixels per plane unit
        cols = (np.arange(width) + 0.5 - 0.5 * width) / scale  # plane x of each pixel column
        rows = (0.5 * height - np.arange(height) - 0.5) / scale  # plane y of each pixel row
        x, y = np.meshgrid(cols, rows)
        frame = np.full((height, width, 3), 235, dtype=np.uint8)
        frame[np.abs(x) <= 0.5 / scale] = 200  # axes
        frame[np.abs(y) <= 0.5 / scale] = 200
        box = (np.abs(np.abs(x) - GOAL_LIMIT) < 0.5 / scale) & (np.abs(y) <= GOAL_LIMIT)
        box |= (np.abs(np.abs(y) - GOAL_LIMIT) < 0.5 / scale) & (np.abs(x) <= GOAL_LIMIT)
        frame[box] = 170  # the square goals are drawn from
        radius = 0.04 * half

        def disc(center: Array, r: float, color: tuple[int, int, int]) -> None:
            # Only the pixels of the disc's bounding box are tested.
            c0 = max(int((center[0] - r) * scale + 0.5 * width), 0)
            c1 = min(int((center[0] + r) * scale + 0.5 * width) + 2, width)
            r0 = max(int(0.5 * height - (center[1] + r) * scale), 0)
            r1 = min(int(0.5 * height - (center[1] - r) * scale) + 2, height)
            if c0 >= c1 or r0 >= r1:
                return
            sub_x, sub_y = x[r0:r1, c0:c1], y[r0:r1, c0:c1]
            mask = np.square(sub_x - center[0]) + np.square(sub_y - center[1]) <= r * r
            frame[r0:r1, c0:c1][mask] = color

        disc(goal, 1.5 * radius, (40, 170, 60))
        if trajectory:
            for point in path[:-1]:
                disc(point, 0.4 * radius, (150, 180, 230))
        disc(pos, radius, (30, 80, 200))
        return frame
