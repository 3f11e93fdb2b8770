"""C MuJoCo and MuJoCo Warp from one and the same Ant state: contact frames and ``qacc``.

Why the warp backend warns about the Ant (``AntRobot.device_physics_note``): C MuJoCo aligns a
leg-floor contact's friction directions with the leg's capsule, MuJoCo Warp 4.0 does so for
some contacts and takes a fixed frame for others, and under the Ant's pyramidal friction cone
the rotated pyramid gives other contact forces. This steps C MuJoCo from
``AntDir.reset_state`` until two or more legs touch the floor, copies ``qpos``, ``qvel`` and
``ctrl`` into a one-world MuJoCo Warp data, runs ``forward`` on both and prints each side's
contact frames and the largest relative ``qacc`` difference, for the model's pyramidal cone
and again for the elliptic cone (which no frame changes). Run it after upgrading mujoco-warp:
when the pyramidal rows agree as the elliptic ones do, the note can go. Needs
``metarl[warp]``.

Usage::

    python benchmarks/warp_contact_frames.py [--seed 1] [--states 3]
"""

from __future__ import annotations

import argparse
import copy
import logging

import mujoco
import numpy as np
import torch

from metarl.cli import parse_args
from metarl.envs import make_family


def _contact_states(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    """States of C MuJoCo's Ant with two or more floor contacts, under random controls."""
    family = make_family("AntDir")
    model, rng = family.model, np.random.default_rng(seed)
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = family.reset_state(rng)
    states: list[dict[str, np.ndarray]] = []
    for step in range(2000):
        if step % 5 == 0:
            data.ctrl[:] = np.clip(rng.standard_normal(model.nu), -1.0, 1.0)
        mujoco.mj_step(model, data)
        if data.ncon >= 2 and step % 7 == 0:
            states.append({k: getattr(data, k).copy() for k in ("qpos", "qvel", "ctrl")})
            if len(states) == count:
                break
    return states


def compare(state: dict[str, np.ndarray], cone: int) -> tuple[float, list[str]]:
    """``(max relative qacc difference, each side's first contact tangent)`` at ``state``."""
    import mujoco_warp as mjw
    import warp as wp

    wp.config.log_level = logging.WARNING
    model = copy.copy(make_family("AntDir").model)
    model.opt.cone = cone
    data = mujoco.MjData(model)
    for name, value in state.items():
        getattr(data, name)[:] = value
    mujoco.mj_forward(model, data)
    device_model, device_data = mjw.put_model(model), mjw.make_data(model, nworld=1)
    for name, value in state.items():
        wp.to_torch(getattr(device_data, name)).copy_(
            torch.tensor(value[None], dtype=torch.float32)
        )
    mjw.forward(device_model, device_data)
    qacc = wp.to_torch(device_data.qacc)[0].numpy()
    diff = float(np.max(np.abs(qacc - data.qacc) / (1.0 + np.abs(data.qacc))))
    c_frame = np.round(data.contact[0].frame[3:6], 3).tolist()
    warp_frame = np.round(wp.to_torch(device_data.contact.frame)[0][1].double().numpy(), 3).tolist()
    return diff, [f"C {c_frame}", f"Warp {warp_frame}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="the C MuJoCo trajectory's seed")
    parser.add_argument("--states", type=int, default=3, help="contact states to compare")
    args = parse_args(parser)
    torch.set_num_threads(1)
    for i, state in enumerate(_contact_states(args.seed, args.states)):
        for cone, label in ((0, "pyramidal"), (1, "elliptic")):
            diff, frames = compare(state, cone)
            print(
                f"state {i}, {label:9s} cone: qacc max relative difference {diff:.1e}; "
                f"first contact's tangent: {', '.join(frames)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
