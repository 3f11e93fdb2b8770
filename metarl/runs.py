"""Run folders: resolved config, metrics (CSV + TensorBoard) and atomic checkpoints.

A run folder looks like::

    runs/maml-trpo-HalfCheetahVel-20261126-130000/
        config.json          # format version, algorithm, family, every resolved setting
        metrics.csv          # one row per iteration: iteration, env_steps_total, metrics
        tb/                  # TensorBoard events (same keys; global step env_steps_total)
        wandb/               # Weights & Biases' local files (runs trained with --track)
        checkpoints/
            latest.pt        # written atomically after every checkpointed iteration
            iter_000050.pt   # kept every ``keep_every`` iterations

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ENV_STEPS_TOTAL",
    "FORMAT_VERSION",
    "MetricsLogger",
    "RunError",
    "RunLock",
    "TrainingError",
    "WandbSettings",
    "atomic_torch_save",
    "capture_rng_state",
    "checksum",
    "create_run_dir",
    "kept_checkpoints",
    "load_checkpoint",
    "nonfinite_tensors",
    "one_line",
    "read_run_config",
    "record_resume",
    "remove_stale_temporaries",
    "require_wandb",
    "resolve_device",
    "restore_rng_state",
    "to_jsonable",
]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
LOCK_FILE = "train.lock"


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
    if path.exists() and not path.is_dir():
        raise RunError(f"--run-dir {path} is a file, not a folder; choose another --run-dir")
    if path.exists() and any(path.iterdir()):
        raise RunError(
            f"run folder {path} already exists and is not empty; pass --resume {path} to "
            "continue it, or choose another --run-dir"
        )
    existed = path.exists()
    try:
        (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        payload = {"format_version": FORMAT_VERSION, **to_jsonable(dict(config))}
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        _atomic_write_text(path / CONFIG_FILE, text)
    except OSError as exc:
        # Leave nothing half made: the same command must be able to run again.
        for folder in (path / CHECKPOINT_DIR, None if existed else path):
            if folder is not None:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    pass
        raise RunError(f"cannot create run folder {path}: {one_line(exc)}") from exc
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


def record_resume(
    path: Path, config: Mapping[str, Any], iteration: int, changes: Mapping[str, Any]
) -> None:
    """Write a resumed run's new config into ``config.json`` and note, under ``"resumes"``,
    at which iteration which settings changed (``{name: [old, new]}``)."""
    saved = read_run_config(path)
    saved["config"] = to_jsonable(dict(config))
    saved.setdefault("resumes", []).append(
        {"iteration": int(iteration), "changed": to_jsonable(dict(changes))}
    )
    text = json.dumps(saved, indent=2, sort_keys=True) + "\n"
    _atomic_write_text(Path(path) / CONFIG_FILE, text)


def latest_checkpoint(path: Path) -> Path:
    ckpt = Path(path) / CHECKPOINT_DIR / LATEST
    if not ckpt.exists():
        raise RunError(f"{path} has no checkpoint yet ({CHECKPOINT_DIR}/{LATEST} is missing)")
    return ckpt


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a new temporary path beside ``path``, fsync it, then rename it to
    ``path``: the file appears only complete, also after a crash. ``tmp`` ends in ``path``'s
    suffix, so writers that pick a format by suffix (plots, videos) work. The file gets the
    permissions of an ordinary new file (the umask). Any failure removes the temporary file;
    one a kill left behind is named ``.<name>.<pid>-<hex>.tmp<suffix>``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _atomic_write(path: Path, write: Any, mode: str) -> None:
    """``write(f)`` on the open temporary file of :func:`write_atomically`."""

    def to(tmp: Path) -> None:
        with open(tmp, mode) as f:
            write(f)

    write_atomically(path, to)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text), "w")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a torn file."""
    _atomic_write(path, lambda f: torch.save(obj, f), "wb")


CHECKSUM_KEY = "sha256"
"""Key of a checkpoint's checksum: sha256 of every other value in it (see :func:`checksum`)."""


def _digest(value: Any, h: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        h.update(f"D{len(value)}:".encode())
        for key, item in value.items():
            h.update(f"{type(key).__name__}:{key!r}=".encode())
            _digest(item, h)
    elif isinstance(value, list | tuple):
        h.update(f"L{len(value)}:".encode())
        for item in value:
            _digest(item, h)
    elif value is None or isinstance(value, bool | int | float | str | bytes):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"a checkpoint holds tensors and plain values, not {type(value).__name__}")


def checksum(state: Mapping[str, Any]) -> str:
    """sha256 (hex) of a checkpoint's contents: every key, value, tensor dtype, shape and byte,
    in order; independent of how the file is serialized. The ``sha256`` key is left out."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != CHECKSUM_KEY}, h)
    return h.hexdigest()


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """The run's kept ``iter_XXXXXX.pt`` checkpoints, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("iter_[0-9]*.pt"))


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files that killed checkpoint writes left (``.latest.pt.*.tmp*``).

    Only safe while this process holds the run's lock (no other writer). Returns them.
    """
    stale = sorted((Path(run_dir) / CHECKPOINT_DIR).glob(".*.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(run_dir: Path, state: Mapping[str, Any], iteration: int, keep: bool) -> Path:
    """Write ``iter_XXXXXX.pt`` (when ``keep``), then ``latest.pt``, each atomically.

    The kept file comes first: a kill at any point leaves every kept checkpoint, and
    ``latest.pt`` either the previous state or this one. Each file carries its checksum.
    """
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    payload = {**state, CHECKSUM_KEY: checksum(state)}
    if keep:
        atomic_torch_save(payload, ckpt_dir / f"iter_{iteration:06d}.pt")
    latest = ckpt_dir / LATEST
    atomic_torch_save(payload, latest)
    return latest


def _older_ones(path: Path) -> str:
    """Advice naming the kept checkpoints beside ``path`` that could replace it."""
    path = Path(path)
    kept = [p for p in kept_checkpoints(path.parent.parent) if p.name != path.name]
    if not kept:
        return "no older kept checkpoint exists beside it"
    names = ", ".join(p.name for p in kept[-3:])
    return (
        f"use a kept one ({names}): copy it over {path.parent / LATEST} to resume "
        "from it, or pass --checkpoint N to eval"
    )


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs) and check its
    checksum (checkpoints of older metarl versions have none and load unchecked).

    Raises:
        RunError: an unreadable or damaged file, naming it and the kept checkpoints to use.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RunError(
            f"cannot read checkpoint {path} ({one_line(exc)}); {_older_ones(path)}"
        ) from exc
    if not isinstance(state, dict) or "iteration" not in state:
        raise RunError(f"{path} is not a metarl checkpoint")
    if CHECKSUM_KEY in state:
        stored = state.pop(CHECKSUM_KEY)
        try:
            actual = checksum(state)
        except TypeError as exc:
            raise RunError(f"checkpoint {path} is damaged ({exc}); {_older_ones(path)}") from exc
        if stored != actual:
            raise RunError(
                f"checkpoint {path} is damaged (its contents do not match their sha256 "
                f"checksum); {_older_ones(path)}"
            )
    for key in ("agent", "rng"):
        if not isinstance(state.get(key), dict):
            raise RunError(f"{path} is not a metarl checkpoint (it has no {key!r} state)")
    return state


def nonfinite_tensors(state: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in ``state`` that hold NaN or infinity."""
    found = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                found.append(name)
        elif isinstance(value, Mapping):
            found += nonfinite_tensors(value, name + ".")
    return found


# --------------------------------------------------------------------------------------------
# One trainer per run
# --------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run folder (``RUN/train.lock``) held while a trainer runs.

    The lock is an ``flock`` on the file, which the kernel releases when its process dies:
    a lock left by a killed trainer is stale at once and the next trainer takes it over. The
    file holds the holder's pid and host for the message of the one refused.

    Raises:
        RunError: another live process holds the lock.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one trainer per run is up to the user
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(
                f"{run_dir} is being trained by {holder} (it holds {self.path}); wait for it "
                "to finish or stop it, then resume"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let another trainer take the run (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


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


def _ranges(values: list[int]) -> str:
    """``[0, 2, 3, 4]`` -> ``"0, 2-4"``."""
    parts: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


RENAMED_METRICS = {
    f"ppo/{k}": f"losses/{k}"
    for k in ("approx_kl", "clip_fraction", "explained_variance", "nonfinite_updates")
}
"""Metric keys of earlier versions -> today's (one key per quantity across agents, namespaced
as cleanrl does); a resumed run's ``metrics.csv`` is rewritten under today's keys."""


def _read_metrics(path: Path, start: int) -> tuple[list[str] | None, list[dict[str, str]]]:
    """The header and rows ``0..start-1`` of a metrics file, checked for a resume at ``start``.

    A last row cut short by a crash (no newline, or fields missing) and rows from ``start`` on
    are dropped.

    Raises:
        RunError: no header, a damaged row before the last, or rows missing before ``start``.
    """
    text = path.read_text()
    if not text.strip():
        if start == 0:
            return None, []
        raise RunError(
            f"cannot resume: {path} is empty, but the checkpoint is at iteration {start} (its "
            "rows are lost); restore the file, or start a new run"
        )
    lines = text.splitlines(keepends=True)
    if not lines[-1].endswith("\n"):
        lines.pop()  # a row cut short while it was written
    header = [RENAMED_METRICS.get(k, k) for k in next(csv.reader(lines[:1]), [])]
    if not header or header[0] != "iteration":
        raise RunError(
            f"cannot resume: {path} has no header row (its first line should start with "
            "'iteration,'); restore the file, or start a new run"
        )
    rows: list[dict[str, str]] = []
    body = list(csv.reader(lines[1:]))
    for n, values in enumerate(body):
        ok = len(values) == len(header)
        if ok:
            try:
                iteration = int(float(values[0]))
            except ValueError:
                ok = False
        if not ok:
            if n == len(body) - 1:
                break  # the last row, cut short
            raise RunError(
                f"cannot resume: row {n + 2} of {path} is damaged ({len(values)} of "
                f"{len(header)} fields); restore the file, or start a new run"
            )
        if iteration < start:
            rows.append(dict(zip(header, values, strict=True)))
    got = [int(float(r["iteration"])) for r in rows]
    if got != list(range(start)):
        missing = sorted(set(range(start)) - set(got))
        what = (
            f"rows for iterations {_ranges(missing)} are missing"
            if missing
            else "rows are repeated or out of order"
        )
        raise RunError(
            f"cannot resume: {path} does not match the checkpoint at iteration {start} "
            f"({what}); restore the file, or start a new run"
        )
    return header, rows


ENV_STEPS = "env_steps"
"""Metric key of the env steps an iteration sampled (every agent's ``train_step`` returns it)."""
ENV_STEPS_TOTAL = "env_steps_total"
"""Column of the env steps of every iteration so far, this one included: TensorBoard's global
step, as in Stable-Baselines3 and cleanrl."""
WANDB_DIR = "wandb"
"""Where Weights & Biases keeps a tracked run's local files, inside the run folder."""
WANDB_ID_FILE = "metarl-run-id"
"""File in :data:`WANDB_DIR` with the Weights & Biases run id, so a resumed run logs into the
same Weights & Biases run."""


def _add_env_steps_total(fields: list[str] | None, rows: list[dict[str, str]]) -> list[str] | None:
    """Give the rows of an earlier version's ``metrics.csv`` (no :data:`ENV_STEPS_TOTAL`
    column) the cumulative env steps, in place; returns the header with the column."""
    if fields is None or ENV_STEPS_TOTAL in fields or ENV_STEPS not in fields:
        return fields
    total = 0.0
    for row in rows:
        total += float(row[ENV_STEPS])
        row[ENV_STEPS_TOTAL] = str(total)
    return [fields[0], ENV_STEPS_TOTAL, *fields[1:]]


def require_wandb(hint: str = "or leave out --track") -> None:
    """Check that Weights & Biases can be imported, before any work starts.

    Raises:
        ValueError: one line naming ``pip install wandb``.
    """
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise ValueError(
            f"--track logs to Weights & Biases, which is not installed: pip install wandb ({hint})"
        )


@dataclass(frozen=True)
class WandbSettings:
    """Where a tracked run logs in Weights & Biases (cleanrl's ``--track`` options).

    Attributes:
        project: the project (``--wandb-project``).
        entity: the team or user (``--wandb-entity``); None: the account's default.
        name: the run's name there (the run folder's name).
        config: the run's resolved settings (its ``config.json``).
    """

    project: str
    entity: str | None
    name: str
    config: Mapping[str, Any]


def _start_wandb(run_dir: Path, settings: WandbSettings) -> Any:
    """``wandb.init`` for the run in ``run_dir``, mirroring its TensorBoard scalars (what
    cleanrl does); a resumed run continues the Weights & Biases run its folder names.

    Raises:
        RunError: Weights & Biases did not start (not logged in, no network), in one line.
    """
    import wandb

    folder = Path(run_dir) / WANDB_DIR
    folder.mkdir(exist_ok=True)
    id_file = folder / WANDB_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(8)  # wandb run ids: lowercase letters and digits
        _atomic_write_text(id_file, run_id + "\n")
    try:
        return wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=dict(settings.config),
            sync_tensorboard=True,
        )
    except Exception as exc:  # wandb raises its own types; the run stops with one line
        raise RunError(
            f"--track: Weights & Biases did not start ({one_line(exc)}); run `wandb login`, "
            "or set WANDB_MODE=offline to keep the logs in the run folder"
        ) from exc


class MetricsLogger:
    """One CSV row and one TensorBoard scalar per key and iteration.

    Each row holds the ``iteration``, :data:`ENV_STEPS_TOTAL` (the env steps of this iteration
    and all before it, from the metrics' ``env_steps``) and the metrics. TensorBoard's global
    step is :data:`ENV_STEPS_TOTAL` (the iteration where the metrics have no ``env_steps``),
    with the iteration logged as the scalar ``iteration``.

    On resume at iteration ``start``, rows from ``start`` on are dropped from the CSV and
    TensorBoard events after it are purged, so a resumed run's logs equal an uninterrupted one's;
    the total continues from the last kept row. An earlier version's ``metrics.csv`` gets the
    :data:`ENV_STEPS_TOTAL` column, computed from its rows.

    Args:
        run_dir: the run folder.
        start_iteration: the iteration training continues from (0 for a new run).
        tensorboard: also write TensorBoard events under ``run_dir/tb``.
        wandb: also log to Weights & Biases (it mirrors the TensorBoard events; needs
            ``tensorboard``).
    """

    def __init__(
        self,
        run_dir: Path,
        start_iteration: int = 0,
        tensorboard: bool = True,
        wandb: WandbSettings | None = None,
    ) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._fields: list[str] | None = None
        rows: list[dict[str, str]] = []
        if wandb is not None and not tensorboard:
            raise ValueError("Weights & Biases mirrors the TensorBoard events: keep tensorboard")
        if self.path.exists():
            self._fields, rows = _read_metrics(self.path, start_iteration)
            self._fields = _add_env_steps_total(self._fields, rows)
            self._rewrite(rows)
        elif start_iteration > 0:
            raise RunError(
                f"cannot resume: {self.path} is missing, but the checkpoint is at iteration "
                f"{start_iteration} (its rows are lost); restore the file, or start a new run"
            )
        counted = self._fields is not None and ENV_STEPS_TOTAL in self._fields
        self.env_steps_total = float(rows[-1][ENV_STEPS_TOTAL]) if counted and rows else 0.0
        """The env steps of every iteration logged so far."""
        self._wandb = None
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if wandb is not None:
                self._wandb = _start_wandb(Path(run_dir), wandb)  # before the writer it mirrors
            purge = None
            if start_iteration > 0:
                # Events from the resumed iteration on (steps above the kept total) go.
                purge = int(self.env_steps_total) + 1 if counted else start_iteration
            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=purge)
        self._started = time.time()

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        if self._fields is None:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._fields)
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write_text(self.path, buf.getvalue())

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Append iteration ``iteration``'s row and write its TensorBoard scalars.

        Raises:
            ValueError: a key the first iteration did not log.
        """
        row: dict[str, float] = {"iteration": iteration}
        total = self.env_steps_total
        if ENV_STEPS in metrics:
            total += float(metrics[ENV_STEPS])
            row[ENV_STEPS_TOTAL] = total
        row.update({k: float(v) for k, v in metrics.items()})
        if self._fields is None:
            self._fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writeheader()
        unknown = [k for k in row if k not in self._fields]
        if unknown:
            raise ValueError(f"metrics keys {unknown} were not logged at the first iteration")
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)
        self.env_steps_total = total
        if self._writer is not None:
            step = int(total) if ENV_STEPS in metrics else iteration
            self._writer.add_scalar("iteration", iteration, step)
            for key, value in metrics.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(key, float(value), step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
