"""The MuJoCo families on a device: N envs as the worlds of one MuJoCo Warp model and data.

:class:`WarpBatch` is the device twin of :class:`~metarl.envs.base.MujocoBatch`: the same
model, ``frame_skip`` and gathered fields, and the family's own ``observe``, ``reward_terms``
and ``terminated`` (written with :func:`metarl.arrays.namespace`), here evaluated on torch
tensors that view MuJoCo Warp's arrays (``warp.to_torch``, no copy). Its simulation is
float32 where C MuJoCo's is float64; ``tests/warp/`` states how far the two agree. A family
whose model changes per task (``per_task_model``) names the fields it changes
(``per_task_fields``); each world gets its own values of those, computed on the host by the
family's ``configure_model`` once per task.

MuJoCo Warp (``pip install 'metarl[warp]'``, Python >= 3.11) runs on NVIDIA GPUs and, for
development and tests, on the CPU. Its kernels compile on first use (about 35 s for
HalfCheetah on the CPU) into Warp's kernel cache (``warp.config.kernel_cache_dir``) and load
from there afterwards (about a second).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch

from metarl.arrays import copy
from metarl.envs.base import MujocoTaskFamily, copy_model
from metarl.family import DeviceBatchStepper, DeviceStep

__all__ = ["INSTALL_HINT", "WarpBatch", "require_mujoco_warp"]

INSTALL_HINT = "pip install 'metarl[warp]' (mujoco-warp >= 4.0, Python >= 3.11)"
"""How to install what the warp backend needs."""


def require_mujoco_warp() -> tuple[ModuleType, ModuleType]:
    """``(warp, mujoco_warp)``, imported.

    Raises:
        ImportError: MuJoCo Warp is not installed, naming the install command.
    """
    try:
        wp = importlib.import_module("warp")
        if wp.config.log_level == logging.INFO:  # Warp's default: a line per kernel module
            wp.config.log_level = logging.WARNING
        mjw = importlib.import_module("mujoco_warp")
    except ImportError as exc:
        raise ImportError(
            f"the warp backend needs MuJoCo Warp, which is not installed here ({exc}): "
            f"{INSTALL_HINT}"
        ) from None
    return wp, mjw


class WarpBatch(DeviceBatchStepper):
    """``num_envs`` envs of a MuJoCo family as the worlds of one MuJoCo Warp data on ``device``.

    Args:
        family: a MuJoCo family that passed ``check_device_backend("warp")``.
        num_envs: worlds.
        device: a torch device, ``cpu`` or ``cuda[:i]``.
        deterministic: MuJoCo Warp's deterministic mode (stable contact order, canonical
            constraint rows, order-invariant atomic sums), so that the same inputs give the
            same bits on a GPU too (the CPU device is deterministic either way).
        cuda_graph: on a CUDA device, replay one env step's physics (``frame_skip`` MuJoCo
            steps and any derived quantities) as a captured CUDA graph.
    """

    family: MujocoTaskFamily

    def __init__(
        self,
        family: MujocoTaskFamily,
        num_envs: int,
        device: torch.device,
        *,
        deterministic: bool = True,
        cuda_graph: bool = True,
    ) -> None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # Warp needs the index
            device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(family, num_envs, device)
        self.wp, self.mjw = require_mujoco_warp()
        wp, mjw = self.wp, self.mjw
        if family.device_physics_note:
            warnings.warn(
                f"{family.name} on MuJoCo Warp: {family.device_physics_note}",
                UserWarning,
                stacklevel=2,
            )
        wp.init()  # once per process; later calls return at once
        self.wp_device = wp.device_from_torch(self.device)
        self.may_terminate = type(family).terminated is not MujocoTaskFamily.terminated
        with wp.ScopedDevice(self.wp_device):
            self.model = mjw.put_model(family.model)
            if deterministic:
                self.model.opt.deterministic = True
            self.data = mjw.make_data(family.model, nworld=self.num_envs)
        self._state = {name: wp.to_torch(getattr(self.data, name)) for name in family.gather}
        self._ctrl = wp.to_torch(self.data.ctrl)
        # A family whose model changes per task: each world gets its own values of the fields
        # it changes (MuJoCo Warp indexes a model field by world modulo its first dimension),
        # allocated once so that a captured CUDA graph keeps seeing the same arrays.
        self._world_fields: dict[str, torch.Tensor] = {}
        self._configured: dict[Any, dict[str, np.ndarray]] = {}
        if family.per_task_model:
            with wp.ScopedDevice(self.wp_device):
                for name in family.per_task_fields:
                    shared = getattr(self.model, name)
                    batched = wp.zeros((self.num_envs, *shared.shape[1:]), dtype=shared.dtype)
                    setattr(self.model, name, batched)
                    self._world_fields[name] = wp.to_torch(batched)
            self._configure_worlds()
        self._use_graph = bool(cuda_graph) and self.device.type == "cuda"
        self._graph: Any = None

    def set_tasks(self, tasks: Sequence[Any]) -> None:
        super().set_tasks(tasks)
        if self._world_fields:
            self._configure_worlds()

    def _task_fields(self, task: Any) -> dict[str, np.ndarray]:
        """The per-task fields of the host model configured for ``task`` (kept per task: a
        batch repeats each task over its episodes, and meta-training over iterations)."""
        if task not in self._configured:
            fam = self.family
            model = copy_model(fam.model)
            fam.configure_model(model, task)
            values = {name: np.array(getattr(model, name)) for name in fam.per_task_fields}
            if len(self._configured) >= 4096:  # bounded: a long run draws new tasks
                self._configured.clear()
            self._configured[task] = values
        return self._configured[task]

    def _configure_worlds(self) -> None:
        per_world = [self._task_fields(task) for task in self._tasks]
        for name, view in self._world_fields.items():
            values = np.stack([fields[name] for fields in per_world]).astype(np.float32)
            view.copy_(torch.from_numpy(values).reshape(view.shape))

    # -- running on the device -----------------------------------------------------------------
    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The scope of a batch: torch's and Warp's work on one stream of the device.

        On CUDA, torch's operations go to Warp's stream (so every kernel runs in program
        order and Warp's graphs can be captured), and the caller's stream waits for it on exit.
        """
        wp = self.wp
        with wp.ScopedDevice(self.wp_device):
            if self.device.type != "cuda":
                yield
                return
            caller = torch.cuda.current_stream(self.device)
            stream = wp.stream_to_torch(wp.get_stream(self.wp_device))
            stream.wait_stream(caller)
            with torch.cuda.stream(stream):
                yield
            caller.wait_stream(stream)

    def _physics(self) -> None:
        """One env step of physics: ``frame_skip`` MuJoCo steps, then what the family reads."""
        m, d, mjw, fam = self.model, self.data, self.mjw, self.family
        for _ in range(fam.frame_skip):
            mjw.step(m, d)
        if fam.needs_contact_forces:
            # As the host path's mj_rnePostConstraint after each env step: cfrc_ext current.
            mjw.rne_postconstraint(m, d)
        if fam.needs_subtree_state:
            self._subtree_state()

    def _subtree_state(self) -> None:
        # As the host path's _update_subtree_state: subtree_com and subtree_linvel of the
        # current qpos and qvel (after mj_step, MuJoCo's are those of the state before it).
        m, d, mjw = self.model, self.data, self.mjw
        mjw.kinematics(m, d)
        mjw.com_pos(m, d)
        mjw.com_vel(m, d)
        mjw.subtree_vel(m, d)

    def _run_physics(self) -> None:
        if not self._use_graph:
            self._physics()
            return
        if self._graph is None:
            with self.wp.ScopedCapture(device=self.wp_device) as capture:
                self._physics()
            self._graph = capture.graph
        self.wp.capture_launch(self._graph)

    # -- the stepper ------------------------------------------------------------------------
    def initial_states(
        self, rngs: Sequence[np.random.Generator], count: int
    ) -> dict[str, torch.Tensor]:
        if len(rngs) != self.num_envs:
            raise ValueError(
                f"{self.family.name}: initial states need one Generator per env "
                f"({self.num_envs}), got {len(rngs)}"
            )
        fam = self.family
        qpos = np.empty((self.num_envs, count, fam.model.nq))
        qvel = np.empty((self.num_envs, count, fam.model.nv))
        for j, rng in enumerate(rngs):
            for m in range(count):
                qpos[j, m], qvel[j, m] = fam.reset_state(rng)
        return {
            "qpos": torch.from_numpy(qpos.astype(np.float32)).to(self.device),
            "qvel": torch.from_numpy(qvel.astype(np.float32)).to(self.device),
        }

    def reset(self, states: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        wp, mjw, m, d = self.wp, self.mjw, self.model, self.data
        with wp.ScopedDevice(self.wp_device):
            mask = mask.to(torch.bool).contiguous()
            mjw.reset_data(m, d, reset=wp.from_torch(mask, dtype=wp.bool))
            for name in ("qpos", "qvel"):
                view = self._state[name]
                view.copy_(torch.where(mask[:, None], states[name], view))
            # forward() recomputes every world's derived quantities from its own state; the
            # worlds not reset keep their trajectory (the integrator's warm start is untouched).
            mjw.forward(m, d)
            if self.family.needs_subtree_state:
                mjw.subtree_vel(m, d)
            if self.family.needs_contact_forces:
                # The host path computes cfrc_ext after steps only (as Gymnasium does): zero
                # in an episode's first observation.
                cfrc = self._state["cfrc_ext"]
                cfrc.masked_fill_(mask[:, None, None], 0.0)
        return self.family.observe(self._state)

    def advance(self, controls: torch.Tensor) -> None:
        """One env step of physics alone with ``controls [N, nu]`` (:meth:`step` without the
        observation and reward; the floor a benchmark compares with)."""
        self._ctrl.copy_(controls)
        with self.wp.ScopedDevice(self.wp_device):
            self._run_physics()

    def step(self, actions: torch.Tensor) -> DeviceStep:
        fam = self.family
        before = {name: copy(self._state[name]) for name in fam.before_fields}
        self.advance(actions)
        state, params = self._state, self.params
        terms, info = fam.reward_terms(before, state, actions, params)
        reward = torch.zeros(self.num_envs, device=self.device)
        for value in terms.values():
            reward = reward + value
        return DeviceStep(
            obs=fam.observe(state),
            reward=reward,
            terminated=fam.terminated(state, params),
            terms=terms,
            info=info,
        )

    def close(self) -> None:
        self._graph = None
        self._state = {}
