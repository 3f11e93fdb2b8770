"""The one progress bar of train, eval and render: tqdm, counted in the work's own unit."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(enabled: bool, total: int, desc: str, unit: str, initial: int = 0) -> Any:
    """A tqdm bar of ``total`` ``unit``s (iterations, episodes, tasks, frames) starting at
    ``initial``, or None when ``enabled`` is False (callers skip their updates then)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
