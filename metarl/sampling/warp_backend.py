"""The device backend: every column of a batch as a world of one simulator on the torch device.

:class:`WarpSampler` steps a family's :class:`~metarl.family.DeviceBatchStepper` (for the
built-in MuJoCo families, MuJoCo Warp: :class:`metarl.envs.warp.WarpBatch`) with all ``K * E``
columns at once, evaluates the policy's batched per-task forward on the same device and
returns the :class:`~metarl.sampling.EpisodeBatch` already on it. Nothing is copied to the
host per step; the host loop only launches work.

Randomness is the host backends': column ``b`` draws its action noise for the whole batch and
its initial states from :func:`~metarl.sampling.column_rngs`, on the host, once per batch, and
they reach the device in one copy each. Given the same seed, this backend and the inline one
feed the physics the same noise and the same initial states; they differ only by the float32
simulation (and float32 rewards) here against float64 on the host, which ``tests/warp/``
measures.

Differences from the host backends, by design:

- a blow-up is caught as a non-finite observation or reward (a *diverged* column), since
  MuJoCo Warp has no per-world instability warning to reset on;
- a family that can terminate costs one device-to-host read of one flag per step (whether any
  column needs a reset); the families that never terminate (HalfCheetah) have none.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarl.family import DeviceBatchStepper, TaskFamily
from metarl.sampling.batch import NONFINITE_ACTIONS, NONFINITE_OBSERVATIONS, NONFINITE_REWARDS
from metarl.sampling.policy_step import PolicyParams
from metarl.sampling.rollout import Job, column_rngs
from metarl.sampling.sampler import Sampler
from metarl.tasks import TaskSampler

__all__ = ["CPU_DEVICE_WARNING", "WarpSampler"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
CPU_DEVICE_WARNING = (
    "the warp backend on the CPU is for development and tests: MuJoCo Warp's CPU device is "
    "several times slower than C MuJoCo (use --backend processes there, or a CUDA device)"
)


def _device_of(policy: nn.Module) -> torch.device:
    for tensor in (*policy.parameters(), *policy.buffers()):
        return tensor.device
    return torch.device("cpu")


class WarpSampler(Sampler):
    """All columns of a batch as worlds of one MuJoCo Warp data on a torch device.

    Args:
        source, policy, horizon: as for :class:`~metarl.sampling.Sampler`; the source must be
            a family that runs on a device (``family.check_device_backend("warp")``).
        device: where the simulation, the policy's forward and the batch live; default: the
            policy's device. A CPU device works (MuJoCo Warp's CPU device, for development and
            tests) with a warning that it is slow.
        deterministic, cuda_graph: passed to the family's device batch
            (:class:`metarl.envs.warp.WarpBatch`).

    Raises:
        ValueError: a source stepped through ``env.step``, a family the backend does not
            support, or a CUDA device where there is none (each before any work).
        ImportError: MuJoCo Warp is not installed (naming the install command).
    """

    def __init__(
        self,
        source: str | TaskFamily | TaskSampler,
        policy: nn.Module,
        *,
        horizon: int | None = None,
        device: str | torch.device | None = None,
        deterministic: bool = True,
        cuda_graph: bool = True,
    ) -> None:
        super().__init__(source, policy, horizon=horizon, fast_path=False)
        family = self.source
        if not isinstance(family, TaskFamily) or getattr(family, "gym_envs", False):
            raise ValueError(
                f"the warp backend steps a built-in MuJoCo family; {family!r} is stepped "
                "through env.step: use --backend inline, processes or ray"
            )
        family.check_device_backend("warp")
        self.family: TaskFamily = family
        self.device = torch.device(device) if device is not None else _device_of(policy)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {self.device} was asked for, but torch sees no CUDA device here; "
                "pass device='cpu' (slow, for development) or use --backend processes"
            )
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"the warp backend runs on cpu or cuda devices, got {self.device}")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cpu":
            warnings.warn(CPU_DEVICE_WARNING, UserWarning, stacklevel=2)
        self.device_policy = copy.deepcopy(policy).to(self.device).eval()
        self._options = {"deterministic": deterministic, "cuda_graph": cuda_graph}
        self._batches: dict[int, DeviceBatchStepper] = {}

    def _env_batch(self, n: int) -> DeviceBatchStepper:
        if n not in self._batches:
            self._batches[n] = self.family.make_device_batch(
                n, self.device, "warp", **self._options
            )
        return self._batches[n]

    def _run(self, jobs: list[Job]) -> list[dict[str, Tensor]]:  # type: ignore[override]
        return [self._rollout(job) for job in jobs]

    def _rollout(self, job: Job) -> dict[str, Tensor]:
        G, E, M, H = len(job.tasks), job.episodes_per_task, job.episodes_per_trial, self.horizon
        n, T, A, dev = G * E, H * M, self.act_dim, self.device
        env = self._env_batch(n)
        env.set_tasks([task for task in job.tasks for _ in range(E)])
        first = job.first_task * E
        noise_rngs, reset_rngs = column_rngs(job.seed, range(first, first + n))
        eps_host = np.empty((T, n, A), dtype=np.float32)
        for j, rng in enumerate(noise_rngs):
            eps_host[:, j] = rng.standard_normal((T, A), dtype=np.float32)
        # no_grad, not inference_mode: the batch's tensors enter the agents' autograd graphs.
        with env.running(), torch.no_grad():
            eps = torch.from_numpy(eps_host).to(dev)
            starts = env.initial_states(reset_rngs, M)
            policy = _DevicePolicy(self.device_policy, job.params, G, E, dev)
            return self._loop(env, policy, eps, starts, M, H, T, n, A)

    def _loop(
        self,
        env: DeviceBatchStepper,
        policy: _DevicePolicy,
        eps: Tensor,
        starts: dict[str, Tensor],
        M: int,
        H: int,
        T: int,
        n: int,
        A: int,
    ) -> dict[str, Tensor]:
        dev = self.device
        f32 = torch.float32
        obs_buf = torch.zeros((T, n, self.obs_dim), dtype=f32, device=dev)
        act_buf = torch.zeros((T, n, A), dtype=f32, device=dev)
        rew_buf = torch.zeros((T, n), dtype=f32, device=dev)
        logp_buf = torch.zeros((T, n), dtype=f32, device=dev)
        term_buf = torch.zeros((T, n), dtype=torch.bool, device=dev)
        trunc_buf = torch.zeros((T, n), dtype=torch.bool, device=dev)
        valid = torch.zeros((T, n), dtype=torch.bool, device=dev)
        ep_id = torch.zeros((T, n), dtype=torch.int64, device=dev)
        ep_start = torch.zeros((T, n), dtype=torch.bool, device=dev)
        last_obs = torch.zeros((n, self.obs_dim), dtype=f32, device=dev)
        unstable = torch.zeros(n, dtype=torch.bool, device=dev)
        ep_ret = torch.zeros((n, M), dtype=torch.float64, device=dev)
        ep_len = torch.zeros((n, M), dtype=torch.int64, device=dev)
        nonfinite = torch.zeros(n, dtype=torch.uint8, device=dev)
        info_keys = tuple(getattr(self.family, "info_keys", ()))
        info_buf = {key: torch.zeros((T, n), dtype=f32, device=dev) for key in info_keys}

        cols = torch.arange(n, device=dev)
        episode = torch.zeros(n, dtype=torch.int64, device=dev)
        t_ep = torch.zeros(n, dtype=torch.int64, device=dev)
        live = torch.ones(n, dtype=torch.bool, device=dev)
        everyone = torch.ones(n, dtype=torch.bool, device=dev)
        obs = env.reset({k: v[:, 0] for k, v in starts.items()}, everyone).to(f32)
        low = torch.as_tensor(self.family.action_space.low, dtype=f32, device=dev)
        high = torch.as_tensor(self.family.action_space.high, dtype=f32, device=dev)
        prev_action = torch.zeros((n, A), dtype=f32, device=dev)
        prev_reward = torch.zeros(n, dtype=f32, device=dev)
        prev_done = torch.zeros(n, dtype=torch.bool, device=dev)
        codes = (NONFINITE_ACTIONS, NONFINITE_OBSERVATIONS, NONFINITE_REWARDS)

        for t in range(T):
            mean, log_std = policy(obs, prev_action, prev_reward, prev_done)
            actions = mean + torch.exp(log_std) * eps[t]
            log_probs = -(0.5 * eps[t].square() + log_std + _HALF_LOG_2PI).sum(-1)
            keep = live[:, None]
            obs_buf[t] = torch.where(keep, obs, 0.0)
            act_buf[t] = torch.where(keep, actions, 0.0)
            logp_buf[t] = torch.where(live, log_probs, 0.0)
            valid[t] = live
            ep_id[t] = torch.where(live, episode, 0)
            ep_start[t] = live & (t_ep == 0)

            act_bad = ~torch.isfinite(actions).all(dim=1)
            env_act = torch.where((act_bad | ~live)[:, None], 0.0, actions.clamp(low, high))
            result = env.step(env_act)
            next_obs = result.obs.to(f32)
            reward = result.reward
            for key, buf in info_buf.items():
                buf[t] = torch.where(live, result.info[key].to(f32), 0.0)
            obs_bad = ~torch.isfinite(next_obs).all(dim=1)
            rew_bad = ~torch.isfinite(reward)
            bad = live & (act_bad | obs_bad | rew_bad)
            code = (
                act_bad.to(torch.uint8) * codes[0]
                | obs_bad.to(torch.uint8) * codes[1]
                | rew_bad.to(torch.uint8) * codes[2]
            )
            nonfinite = torch.where(bad, code, nonfinite)
            terminated = result.terminated & live & ~bad
            t_ep = t_ep + live.to(torch.int64)
            truncated = live & (t_ep >= H) & ~terminated & ~bad
            reward = torch.where(live & ~bad, reward, 0.0)
            rew_buf[t] = reward
            term_buf[t] = terminated
            trunc_buf[t] = truncated
            this_episode = torch.nn.functional.one_hot(episode, M).to(torch.bool) & live[:, None]
            ep_ret += torch.where(this_episode, reward.to(torch.float64)[:, None], 0.0)
            ep_len += (this_episode & ~bad[:, None]).to(torch.int64)
            # The blown-up step is dropped; the episode ends at the step before it.
            valid[t] = valid[t] & ~bad
            obs_buf[t] = torch.where(bad[:, None], 0.0, obs_buf[t])
            act_buf[t] = torch.where(bad[:, None], 0.0, act_buf[t])
            logp_buf[t] = torch.where(bad, 0.0, logp_buf[t])
            ep_id[t] = torch.where(bad, 0, ep_id[t])
            ep_start[t] = ep_start[t] & ~bad
            if t > 0:
                trunc_buf[t - 1] = trunc_buf[t - 1] | (bad & (t_ep > 1))
            last_obs = torch.where(bad[:, None], obs, last_obs)
            unstable = unstable | bad
            ended = (terminated | truncated) & ~bad
            more = episode + 1 < M
            finished = ended & ~more
            again = ended & more
            obs = torch.where((live & ~bad)[:, None], next_obs, obs)
            last_obs = torch.where(finished[:, None], next_obs, last_obs)
            live = live & ~bad & ~finished
            if policy.recurrent:
                prev_action = actions
                prev_reward = reward.to(f32)
                prev_done = ended
            # Resets: a family that never terminates ends every episode at the horizon, the
            # same step for every column still live; otherwise ask the device (one flag).
            due = (t + 1) % H == 0 and t + 1 < T
            if due if not env.may_terminate else bool(again.any()):
                episode = torch.where(again, episode + 1, episode)
                t_ep = torch.where(again, 0, t_ep)
                state = {k: v[cols, episode] for k, v in starts.items()}
                obs = torch.where(again[:, None], env.reset(state, again).to(f32), obs)

        diverged = nonfinite != 0
        later = torch.arange(M, device=dev)[None, :] >= episode[:, None]
        ep_ret = torch.where(diverged[:, None] & later, math.nan, ep_ret)
        for buf in info_buf.values():
            buf.masked_fill_(~valid, 0.0)
        return {
            **{f"info/{key}": buf for key, buf in info_buf.items()},
            "obs": obs_buf,
            "actions": act_buf,
            "rewards": rew_buf,
            "log_probs": logp_buf,
            "terminated": term_buf,
            "truncated": trunc_buf,
            "valid": valid,
            "episode_id": ep_id,
            "episode_start": ep_start,
            "last_obs": last_obs,
            "returns": ep_ret.sum(dim=1).to(f32),
            "lengths": ep_len.sum(dim=1),
            "unstable": unstable,
            "episode_returns": ep_ret.to(f32),
            "episode_lengths": ep_len,
            "nonfinite": nonfinite,
        }

    def close(self) -> None:
        for batch in self._batches.values():
            batch.close()
        self._batches.clear()
        super().close()


class _DevicePolicy:
    """The policy's batched per-task forward on the device: ``vmap`` over ``G`` groups of ``E``
    columns of ``functional_call``, each group with its task's parameters."""

    def __init__(
        self, policy: nn.Module, params: PolicyParams, G: int, E: int, device: torch.device
    ) -> None:
        self.policy, self.G, self.E = policy, G, E
        self.recurrent = bool(getattr(policy, "recurrent", False))
        self.params: dict[str, Tensor] = {}
        for k, v in params.values.items():
            value = torch.from_numpy(np.ascontiguousarray(v)).to(device)
            self.params[k] = value if params.per_task else value.expand(G, *value.shape)
        for k, v in params.buffers.items():
            value = torch.from_numpy(np.ascontiguousarray(v)).to(device)
            self.params[k] = value.expand(G, *value.shape)

        def call(p: dict[str, Tensor], *args: Any) -> Any:
            return functional_call(policy, p, args)

        self._call = vmap(call)
        self.state: Any = None
        if self.recurrent:
            with torch.no_grad():
                one = policy.initial_state(E)  # type: ignore[operator]
            self.state = torch.utils._pytree.tree_map(
                lambda s: s.to(device).unsqueeze(0).expand(G, *s.shape).contiguous(), one
            )

    def __call__(
        self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, done: Tensor
    ) -> tuple[Tensor, Tensor]:
        G, E = self.G, self.E
        x = obs.view(G, E, -1)
        if self.recurrent:
            inputs = torch.cat(
                [
                    x,
                    prev_action.view(G, E, -1),
                    prev_reward.view(G, E, 1),
                    done.to(torch.float32).view(G, E, 1),
                ],
                dim=-1,
            )
            mean, log_std, self.state = self._call(self.params, inputs, self.state)
        else:
            mean, log_std = self._call(self.params, x)
        n = G * E
        return mean.reshape(n, -1), log_std.reshape(n, -1)
