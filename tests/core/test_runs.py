"""Run folders: config, metrics, checkpoints, random states and their error cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.runs import (
    FORMAT_VERSION,
    MetricsLogger,
    RunError,
    capture_rng_state,
    create_run_dir,
    latest_checkpoint,
    load_checkpoint,
    read_run_config,
    resolve_device,
    restore_rng_state,
    save_checkpoint,
)


def test_create_and_read_run_dir(tmp_path: Path) -> None:
    run = create_run_dir(
        tmp_path / "run", {"algo": "maml-trpo", "run": {"run_dir": tmp_path, "sizes": (1, 2)}}
    )
    config = read_run_config(run)
    assert config["format_version"] == FORMAT_VERSION
    assert config["run"] == {"run_dir": str(tmp_path), "sizes": [1, 2]}
    with pytest.raises(RunError, match="already exists and is not empty"):
        create_run_dir(run, {"algo": "x"})


def test_read_run_config_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        read_run_config(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match=r"no config\.json"):
        read_run_config(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        read_run_config(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(RunError, match="newer metarl"):
        read_run_config(tmp_path / "empty")
    with pytest.raises(RunError, match="no checkpoint yet"):
        latest_checkpoint(tmp_path / "empty")


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rng.random(3)
    state = {"iteration": 7, "agent": {"w": torch.arange(4.0)}, "rng": capture_rng_state(rng)}
    save_checkpoint(tmp_path, state, 7, keep=True)
    assert (tmp_path / "checkpoints" / "iter_000007.pt").exists()
    loaded = load_checkpoint(latest_checkpoint(tmp_path))
    assert loaded["iteration"] == 7
    torch.testing.assert_close(loaded["agent"]["w"], torch.arange(4.0))
    expected = rng.random(5)
    other = np.random.default_rng(0)
    restore_rng_state(other, loaded["rng"])
    np.testing.assert_array_equal(other.random(5), expected)
    # No temporary files are left beside the checkpoint.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "iter_000007.pt",
        "latest.pt",
    ]


def test_load_checkpoint_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(RunError, match="not a metarl checkpoint"):
        load_checkpoint(path)


def test_metrics_resume_truncates_later_rows(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for it in range(5):
        logger.log(it, {"meta/return": float(it)})
    logger.close()
    resumed = MetricsLogger(tmp_path, start_iteration=3, tensorboard=False)
    resumed.log(3, {"meta/return": 30.0})
    resumed.close()
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["iteration"], r["meta/return"]) for r in rows] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "30.0"),
    ]


def test_metrics_reject_new_keys(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(0, {"a": 1.0})
    with pytest.raises(ValueError, match="not logged at the first iteration"):
        logger.log(1, {"a": 1.0, "b": 2.0})


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
