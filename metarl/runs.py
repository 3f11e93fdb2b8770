"""Run folders: resolved config, metrics (CSV + TensorBoard) and atomic checkpoints.

A run folder looks like::

    runs/maml-trpo-HalfCheetahVel-20261126-130000/
        config.json          # format version, algorithm, family, every resolved setting
        metrics.csv          # one row per iteration
        tb/                  # TensorBoard events (same keys as the CSV)
        checkpoints/
            latest.pt        # written atomically after every checkpointed iteration
            iter_000050.pt   # kept every ``keep_every`` iterations

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FORMAT_VERSION",
    "MetricsLogger",
    "RunError",
    "TrainingError",
    "atomic_torch_save",
    "capture_rng_state",
    "create_run_dir",
    "load_checkpoint",
    "one_line",
    "read_run_config",
    "resolve_device",
    "restore_rng_state",
    "to_jsonable",
]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"


class RunError(ValueError):
    """A run folder that cannot be used as asked (missing, incomplete, wrong kind)."""


class TrainingError(RunError):
    """Training stopped by a failure; the message is one line that says how to continue."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for, but torch sees no CUDA device (use --device auto or cpu)"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")
    return resolved


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def create_run_dir(path: Path, config: Mapping[str, Any]) -> Path:
    """Create a fresh run folder and write ``config.json`` into it.

    Raises:
        RunError: when ``path`` exists and is not empty (use ``--resume`` to continue a run).
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise RunError(
            f"run folder {path} already exists and is not empty; pass --resume {path} to "
            "continue it, or choose another --run-dir"
        )
    try:
        (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create run folder {path}: {exc}") from exc
    payload = {"format_version": FORMAT_VERSION, **to_jsonable(dict(config))}
    _atomic_write_text(path / CONFIG_FILE, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def read_run_config(path: Path) -> dict[str, Any]:
    """Read and check a run folder's ``config.json``.

    Raises:
        RunError: missing folder or config, unreadable JSON, or a newer format version.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a run folder (it does not exist)")
    config_path = path / CONFIG_FILE
    if not config_path.exists():
        raise RunError(f"{path} is not a run folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{config_path} is not valid JSON: {exc}") from exc
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunError(
            f"{path} was written by a newer metarl (run format {version!r}; this one reads "
            f"up to {FORMAT_VERSION}); upgrade metarl"
        )
    return config


def latest_checkpoint(path: Path) -> Path:
    ckpt = Path(path) / CHECKPOINT_DIR / LATEST
    if not ckpt.exists():
        raise RunError(f"{path} has no checkpoint yet ({CHECKPOINT_DIR}/{LATEST} is missing)")
    return ckpt


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a torn file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, state: Mapping[str, Any], iteration: int, keep: bool) -> Path:
    """Write ``latest.pt`` (and ``iter_XXXXXX.pt`` when ``keep``) atomically."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    latest = ckpt_dir / LATEST
    atomic_torch_save(dict(state), latest)
    if keep:
        atomic_torch_save(dict(state), ckpt_dir / f"iter_{iteration:06d}.pt")
    return latest


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RunError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or "iteration" not in state:
        raise RunError(f"{path} is not a metarl checkpoint")
    return state


def one_line(exc: BaseException) -> str:
    """The exception as one line: its message's first line (and a worker traceback's last).

    ``MemoryError`` and ``OSError`` say their type (their messages alone can be empty or bare).
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
    if isinstance(exc, MemoryError | OSError):
        text = f"{type(exc).__name__}: {text}"
    return text


# --------------------------------------------------------------------------------------------
# Random states
# --------------------------------------------------------------------------------------------


def capture_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """Every random state a run owns: its numpy generator and torch's CPU/CUDA states."""
    state: dict[str, Any] = {
        "numpy": json.dumps(rng.bit_generator.state),
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["torch_cuda"]))


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


class MetricsLogger:
    """One CSV row and one TensorBoard scalar per key and iteration.

    On resume at iteration ``start``, rows from ``start`` on are dropped from the CSV and
    TensorBoard events after it are purged, so a resumed run's logs equal an uninterrupted one's.
    """

    def __init__(self, run_dir: Path, start_iteration: int = 0, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._fields: list[str] | None = None
        rows: list[dict[str, str]] = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self._fields = list(reader.fieldnames or []) or None
                rows = [r for r in reader if int(float(r["iteration"])) < start_iteration]
            self._rewrite(rows)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(Path(run_dir) / "tb"), purge_step=start_iteration or None
            )
        self._started = time.time()

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        if self._fields is None:
            return
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        row = {"iteration": iteration, **{k: float(v) for k, v in metrics.items()}}
        if self._fields is None:
            self._fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writeheader()
        unknown = [k for k in row if k not in self._fields]
        if unknown:
            raise ValueError(f"metrics keys {unknown} were not logged at the first iteration")
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)
        if self._writer is not None:
            for key, value in metrics.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(key, float(value), iteration)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
