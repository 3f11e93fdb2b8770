"""One family function for numpy arrays and torch tensors alike.

A family's observation, reward and termination functions are written once and run on the
host (numpy, the C MuJoCo path) and on a device (torch tensors viewing MuJoCo Warp's arrays).
They take their array functions from :func:`namespace` of their inputs, ``xp``, and use only
what numpy and torch both spell the same way: ``xp.concatenate(parts, axis=1)``,
``xp.sum(x, axis=1)``, ``xp.abs``, ``xp.square``, ``xp.clip``, ``xp.isfinite``,
``xp.all(x, axis=1)``, ``xp.zeros_like(x, dtype=bool)``, indexing and arithmetic. A copy is
:func:`copy` (numpy's ``.copy()``, torch's ``.clone()``). On numpy inputs ``xp`` is numpy
itself, so the host path computes exactly what it computed before.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["constant", "copy", "is_tensor", "namespace"]


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch where nothing did)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*arrays: Any) -> ModuleType:
    """``torch`` if any of ``arrays`` is a torch tensor, else ``numpy``."""
    if any(is_tensor(a) for a in arrays):
        return sys.modules["torch"]
    return np


def copy(x: Any) -> Any:
    """A copy of ``x`` that no later write to ``x`` changes."""
    return x.clone() if is_tensor(x) else x.copy()


def constant(value: Any, like: Any) -> Any:
    """``value`` (a number or numpy array) as an array of ``like``'s kind: a tensor of its dtype
    on its device for a torch ``like``, else ``value`` unchanged (so the host path computes
    with the value itself)."""
    if is_tensor(like):
        return sys.modules["torch"].as_tensor(value, dtype=like.dtype, device=like.device)
    return value
