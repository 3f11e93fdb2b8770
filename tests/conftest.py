"""Suite-wide test settings: headless MuJoCo rendering and the ``gpu`` marker.

``MUJOCO_GL`` must be set before anything imports ``mujoco``; conftest files are imported
before any test module, so the default is set here (an explicit value in the environment wins).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch

# The suite shares two cores with sampler worker processes: torch's own threads would spin
# against them (see RunArgs.torch_threads).
torch.set_num_threads(1)


def _cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where no CUDA device exists."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip)


_MUJOCO_LOG = Path.cwd() / "MUJOCO_LOG.TXT"
_LOG_BEFORE = _MUJOCO_LOG.exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything in it made MuJoCo write MUJOCO_LOG.TXT into the working
    directory (metarl routes MuJoCo's warnings through Python; see metarl.mujoco_messages)."""
    if not _LOG_BEFORE and _MUJOCO_LOG.exists():
        print(f"\nerror: the test run wrote {_MUJOCO_LOG}: a MuJoCo warning escaped metarl")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
