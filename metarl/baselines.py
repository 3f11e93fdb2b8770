"""The linear feature baseline of Duan et al. 2016 (rllab), as pytorch-maml-rl uses it.

A value estimate linear in hand-made features of the observation and of the time step,
refit from scratch by regularised least squares on every batch (one model per task). See
https://arxiv.org/abs/1604.06778 (appendix) and rllab's ``linear_feature_baseline.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metarl.sampling.batch import task_major, time_major

__all__ = ["LinearFeatureBaseline", "linear_features"]

OBS_CLIP = 10.0
"""Observations are clipped to ``[-OBS_CLIP, OBS_CLIP]`` before they become features."""

TIME_SCALE = 100.0
"""The time features are powers of ``t / TIME_SCALE``."""


def linear_features(obs: Tensor, valid: Tensor) -> Tensor:
    """Features ``[clip(obs, ±10), clip(obs, ±10)^2, s, s^2, s^3, 1]`` with ``s = t / 100``.

    Args:
        obs: ``[T, B, D]`` observations.
        valid: ``[T, B]`` mask, 1 (or True) for real steps, 0 for padding.

    Returns:
        ``[T, B, 2 * D + 4]`` features in ``obs``'s dtype, 0 at padded steps. ``t`` is the step
        index within the episode (episodes start at ``t = 0``).
    """
    if obs.dim() != 3:
        raise ValueError(f"obs must be time-major [T, B, D], got shape {tuple(obs.shape)}")
    if valid.shape != obs.shape[:2]:
        raise ValueError(
            f"valid must have shape [T, B] = {tuple(obs.shape[:2])}, got {tuple(valid.shape)}"
        )
    T, B, _ = obs.shape
    mask = (valid > 0).unsqueeze(-1)
    o = torch.where(mask, obs, torch.zeros((), dtype=obs.dtype, device=obs.device))
    o = o.clamp(-OBS_CLIP, OBS_CLIP)
    s = (torch.arange(T, dtype=obs.dtype, device=obs.device) / TIME_SCALE).view(T, 1, 1)
    s = s.expand(T, B, 1)
    feats = torch.cat([o, o * o, s, s * s, s * s * s, torch.ones_like(s)], dim=-1)
    return feats * mask.to(obs.dtype)


class LinearFeatureBaseline:
    """Per-task linear value baseline, refit on every batch.

    The model has no state worth keeping between batches: :meth:`fit_predict` solves for fresh
    coefficients each call, so a checkpoint needs only the configuration
    (:meth:`state_dict`). The last coefficients are kept in :attr:`coeffs` for inspection.

    Args:
        reg_coeff: ridge term added to the normal equations' diagonal; multiplied by 10 (at most
            ``max_tries - 1`` times, per group) until the solve is finite.
        max_tries: how many regularisation strengths to try before giving up.
    """

    def __init__(self, reg_coeff: float = 1e-5, max_tries: int = 5) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be positive, got {reg_coeff}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        self.reg_coeff = float(reg_coeff)
        self.max_tries = int(max_tries)
        self.coeffs: Tensor | None = None
        """``[groups, 2 * D + 4]`` coefficients of the last fit (float64), or None."""

    def fit_predict(self, obs: Tensor, returns: Tensor, valid: Tensor, groups: int = 1) -> Tensor:
        """Fit one linear model per column group to ``returns`` and predict the values.

        Args:
            obs: ``[T, B, D]`` observations.
            returns: ``[T, B]`` regression targets (the discounted returns).
            valid: ``[T, B]`` mask, 1 (or True) for real steps, 0 for padding (ignored in the
                fit, 0 in the output).
            groups: number ``K`` of equal contiguous column groups, one model each (task-major
                batches: columns ``k * E .. k * E + E - 1`` are task ``k``). ``K`` must divide
                ``B``.

        Returns:
            ``[T, B]`` fitted values in ``returns``'s dtype, 0 at padded steps.

        Raises:
            ValueError: on bad shapes or ``groups``.
            RuntimeError: if the solve is not finite even with ``reg_coeff * 10**(max_tries-1)``.
        """
        feats = linear_features(obs, valid)
        T, B, F = feats.shape
        if returns.shape != (T, B):
            raise ValueError(
                f"returns must have shape [T, B] = ({T}, {B}), got {tuple(returns.shape)}"
            )
        if groups < 1 or B % groups != 0:
            raise ValueError(
                f"groups must be a positive divisor of the batch width B={B}, got {groups}"
            )

        def by_group(x: Tensor) -> Tensor:  # [T, B, ...] -> [groups, T * E, ...]
            return task_major(x, groups)

        # The normal equations square the features' condition number: solve in float64.
        X = by_group(feats.to(torch.float64))
        mask = by_group(valid > 0)
        y = torch.where(mask, by_group(returns.detach().to(torch.float64)), 0.0)
        XtX = X.transpose(1, 2) @ X
        Xty = (X.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
        eye = torch.eye(F, dtype=torch.float64, device=X.device)
        reg = torch.full((groups,), self.reg_coeff, dtype=torch.float64, device=X.device)
        coeffs = torch.zeros(groups, F, dtype=torch.float64, device=X.device)
        done = torch.zeros(groups, dtype=torch.bool, device=X.device)
        for _ in range(self.max_tries):
            sol, info = torch.linalg.solve_ex(XtX + reg.view(-1, 1, 1) * eye, Xty)
            ok = (info == 0) & torch.isfinite(sol).all(dim=-1)
            new = ok & ~done
            coeffs = torch.where(new.unsqueeze(-1), sol, coeffs)
            done = done | ok
            if bool(done.all()):
                break
            reg = torch.where(done, reg, reg * 10.0)
        else:
            bad = (~done).nonzero().flatten().tolist()
            raise RuntimeError(
                f"LinearFeatureBaseline: the least-squares solve is not finite for groups {bad} "
                f"even with reg_coeff up to {self.reg_coeff * 10 ** (self.max_tries - 1):g}; "
                "check the observations and returns for NaN or inf"
            )
        self.coeffs = coeffs
        values = (X @ coeffs.unsqueeze(-1)).squeeze(-1)  # [groups, T * E]
        values = time_major(values, T)
        return values.to(returns.dtype) * (valid > 0).to(returns.dtype)

    def state_dict(self) -> dict[str, Any]:
        """The configuration (the coefficients are refit on every batch, so none are saved)."""
        return {"reg_coeff": self.reg_coeff, "max_tries": self.max_tries}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the configuration saved by :meth:`state_dict`."""
        restored = LinearFeatureBaseline(float(state["reg_coeff"]), int(state["max_tries"]))
        self.reg_coeff, self.max_tries = restored.reg_coeff, restored.max_tries
        self.coeffs = None
