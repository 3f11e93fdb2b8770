"""MuJoCo's warnings routed through Python's :mod:`warnings`, never to stdout or a log file.

MuJoCo's default warning handler prints each warning and appends it to ``MUJOCO_LOG.TXT`` in
the working directory. Gymnasium's half_cheetah, hopper and walker2d models set the
``settotalmass`` compiler attribute, which MuJoCo >= 4 reports as deprecated on every compile;
the masses it yields are exactly the v5 envs' ones, so that notice says nothing to a user of
metarl and is dropped. Every other MuJoCo warning (an unstable simulation, a full contact
buffer) becomes a ``RuntimeWarning`` that Python's warning filters show or silence.
"""

from __future__ import annotations

import warnings

__all__ = ["DROPPED_NOTICES", "route_mujoco_warnings"]

DROPPED_NOTICES = ("settotalmass",)
"""Substrings of the MuJoCo warnings that are dropped (compile notices about Gymnasium's
model files, not about anything a run does)."""

_installed = False


def route_mujoco_warnings() -> None:
    """Install the handler (once per process; a handler installed before stays in the chain).

    Called wherever metarl compiles or steps MuJoCo models: importing ``metarl.envs``, the
    generic samplers' ``make_env`` and the rollout code.
    """
    global _installed
    if _installed:
        return
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if any(notice in message for notice in DROPPED_NOTICES):
            return
        if previous is not None:
            previous(message)
        else:
            warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)
    _installed = True
