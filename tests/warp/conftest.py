"""Settings of the warp backend's tests: MuJoCo Warp's CPU device, quiet kernel loading.

The tests that simulate skip where ``metarl[warp]`` is not installed (``make test-warp``
builds ``.venv-warp`` and runs them); the others run everywhere. MuJoCo Warp compiles its
kernels on first use (about 35 s for HalfCheetah on one CPU core) into Warp's kernel cache,
``~/.cache/warp/<version>``, shared by every later test and run (about 1 s to load).
"""

from __future__ import annotations

import importlib.util
import logging

HAVE_WARP = importlib.util.find_spec("mujoco_warp") is not None

if HAVE_WARP:
    import warp

    # One line per loaded kernel module is Warp's default; the tests only want failures.
    warp.config.log_level = logging.WARNING
