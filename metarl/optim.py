"""Second-order optimisation pieces for TRPO: flat vectors, conjugate gradient, Hessian-vector
products and the backtracking line search.

Parameters are name -> tensor dicts (what :meth:`metarl.policies.GaussianMLPPolicy.params`
returns); the solvers work on flat vectors ``[N]`` (``N`` the total number of parameters) in
the parameters' dtype and on their device. References: Schulman et al. 2015, "Trust Region
Policy Optimization" (https://arxiv.org/abs/1502.05477), appendix C; pytorch-maml-rl's
``maml_trpo.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BatchedAdam",
    "LineSearchResult",
    "backtracking_line_search",
    "conjugate_gradient",
    "flat_grad",
    "flatten_params",
    "hessian_vector_product",
    "trpo_full_step",
    "unflatten_params",
]

ParamsLike = Mapping[str, Tensor] | Iterable[Tensor]


def _tensors(params: ParamsLike) -> list[Tensor]:
    return list(params.values()) if isinstance(params, Mapping) else list(params)


def flatten_params(params: ParamsLike) -> Tensor:
    """Concatenate tensors (a name -> tensor dict, in its order, or a sequence) into ``[N]``.

    The result is differentiable with respect to the inputs.
    """
    tensors = _tensors(params)
    if not tensors:
        raise ValueError("flatten_params needs at least one tensor")
    return torch.cat([p.reshape(-1) for p in tensors])


def unflatten_params(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split a flat ``[N]`` vector into a dict with the names and shapes of ``like``.

    The values are views of ``flat`` (differentiable with respect to it).
    """
    sizes = [p.numel() for p in like.values()]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(
            f"flat must be a vector of {sum(sizes)} elements (the size of the parameters), "
            f"got shape {tuple(flat.shape)}"
        )
    chunks = torch.split(flat, sizes)
    return {name: c.view_as(p) for (name, p), c in zip(like.items(), chunks, strict=True)}


def flat_grad(
    output: Tensor,
    params: ParamsLike,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> Tensor:
    """Gradient of a scalar ``output`` with respect to ``params``, flattened to ``[N]``.

    Parameters that ``output`` does not depend on get zero gradients. ``retain_graph`` defaults
    to ``create_graph``, as in :func:`torch.autograd.grad`.
    """
    if output.numel() != 1:
        raise ValueError(f"flat_grad needs a scalar output, got shape {tuple(output.shape)}")
    tensors = _tensors(params)
    grads = torch.autograd.grad(
        output,
        tensors,
        retain_graph=retain_graph,
        create_graph=create_graph,
        allow_unused=True,
    )
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(tensors, grads, strict=True)
        ]
    )


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> Tensor:
    """Approximately solve ``A x = b`` for a symmetric positive-definite ``A`` given as ``Avp``.

    Args:
        Avp: ``v [N] -> A v [N]``, the matrix-vector product.
        b: ``[N]`` right-hand side.
        iters: at most this many iterations (each one call of ``Avp``).
        residual_tol: stop once the squared residual norm ``||b - A x||^2`` falls below this.

    Returns:
        ``[N]`` solution ``x`` (detached), starting from ``x = 0``.
    """
    return _conjugate_gradient(Avp, b, iters, residual_tol)[0]


def _conjugate_gradient(
    Avp: Callable[[Tensor], Tensor], b: Tensor, iters: int, residual_tol: float
) -> tuple[Tensor, Tensor]:
    """:func:`conjugate_gradient`'s ``x`` and ``A x``, the latter as ``sum alpha_i A p_i`` of
    the products it took (exact for a linear ``A``, whether or not the ``p_i`` stayed
    ``A``-conjugate)."""
    if b.dim() != 1:
        raise ValueError(f"b must be a vector [N], got shape {tuple(b.shape)}")
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    b = b.detach()
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = r @ r
    for _ in range(iters):
        if float(rdotr) < residual_tol:
            break
        z = Avp(p).detach()
        alpha = rdotr / (p @ z)
        x = x + alpha * p
        ax = ax + alpha * z
        r = r - alpha * z
        new_rdotr = r @ r
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return x, ax


def trpo_full_step(
    Avp: Callable[[Tensor], Tensor], g: Tensor, max_kl: float, iters: int = 10
) -> tuple[Tensor, float]:
    """TRPO's full step for a loss with gradient ``g``: ``-x * sqrt(2 max_kl / x.A x)``.

    ``x`` solves ``A x = g`` by :func:`conjugate_gradient` (``A``: the KL's Hessian), and the
    step is scaled so that its quadratic KL ``x.A x / 2`` is exactly ``max_kl``, ``A x`` summed
    from CG's own products (no further product). CG's cheaper recurrence ``x.A x = sum alpha *
    r.r`` is not used, because it holds only while the search directions stay ``A``-conjugate,
    and in float32 on a policy's ill-conditioned KL Hessian they drift apart within ten
    iterations (MAML-TRPO on HalfCheetahDir: 7% too small, so the step overshot the trust
    region by as much before the line search).

    Returns:
        ``(full_step, expected_improvement)``: the ``[N]`` step and ``-g . full_step``.
    """
    x, ax = _conjugate_gradient(Avp, g, iters, 1e-10)
    # At least 2e-16 (a zero gradient gives a zero step); NaN stays NaN, and the line
    # search rejects the non-finite step.
    quadratic = max(float(x @ ax), 2e-16)
    full_step = -x * math.sqrt(2.0 * max_kl / quadratic)
    return full_step, float(-(g.detach() @ full_step))


def hessian_vector_product(
    fn: Callable[[dict[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """Build ``v [N] -> (H + damping * I) v [N]`` with ``H`` the Hessian of ``fn`` at ``params``.

    ``fn(params)`` (a scalar, e.g. the mean KL between the old and the new policy) is evaluated
    and differentiated once with ``create_graph=True``; each product is then one more backward
    pass through that gradient (Pearlmutter's trick), so no ``[N, N]`` matrix is ever formed.

    Args:
        fn: ``params -> scalar``, twice differentiable.
        params: name -> tensor dict, every tensor requiring grad.
        damping: added multiple of the identity (TRPO's ``cg_damping``), ``>= 0``.

    Returns:
        A function of a flat ``[N]`` vector returning a detached ``[N]`` vector; it may be called
        any number of times (the graph of the first gradient is kept alive by the closure).
    """
    if damping < 0:
        raise ValueError(f"damping must be non-negative, got {damping}")
    params = dict(params)
    for name, p in params.items():
        if not p.requires_grad:
            raise ValueError(f"parameter {name!r} does not require grad; the Hessian needs it")
    grad = flat_grad(fn(params), params, create_graph=True)
    n = grad.numel()

    def hvp(v: Tensor) -> Tensor:
        if v.shape != (n,):
            raise ValueError(f"v must be a vector of {n} elements, got shape {tuple(v.shape)}")
        v = v.detach().to(grad.dtype)
        hv = flat_grad(grad @ v, params, retain_graph=True)
        return hv.detach() + damping * v

    return hvp


def _scalar(x: Tensor | float) -> float:
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(
                f"expected a scalar loss or KL, got a tensor of shape {tuple(x.shape)}"
            )
        return float(x.detach().item())
    return float(x)


@dataclass(frozen=True)
class LineSearchResult:
    """What :func:`backtracking_line_search` returns.

    Attributes:
        accepted: whether a step was accepted.
        params: the accepted parameters, or the original ``params`` when nothing was accepted.
        step_fraction: the accepted fraction of the full step (0.0 when nothing was accepted).
        loss: the loss at ``params`` (the old loss when nothing was accepted).
        kl: the KL at ``params`` (0.0 when nothing was accepted).
        old_loss: the loss before the step.
        tries: how many step fractions were evaluated.
    """

    accepted: bool
    params: dict[str, Tensor]
    step_fraction: float
    loss: float
    kl: float
    old_loss: float
    tries: int


def backtracking_line_search(
    objective: Callable[[dict[str, Tensor]], tuple[Tensor | float, Tensor | float]],
    params: Mapping[str, Tensor],
    full_step: Tensor,
    expected_improvement: Tensor | float,
    max_kl: float,
    ratio: float = 0.8,
    max_steps: int = 15,
    accept_ratio: float = 0.0,
    old_loss: Tensor | float | None = None,
) -> LineSearchResult:
    """TRPO's backtracking line search on ``params + ratio**i * full_step``, ``i < max_steps``.

    The first candidate whose loss and KL are finite, whose loss decreased (by more than
    ``accept_ratio * ratio**i * expected_improvement``) and whose ``kl <= max_kl`` is accepted.
    The defaults (0.8, 15 steps, plain decrease) are pytorch-maml-rl's, whose surrogate also
    returns the loss and the KL of a candidate together. Candidates are fresh leaf tensors with
    the original ``requires_grad``, so ``objective`` may differentiate through them (MAML's
    inner adaptation step does). Non-finite parameters are never returned.

    Args:
        objective: ``params -> (scalar loss to minimise, scalar KL from the old policy)``.
        params: the current parameters (name -> tensor).
        full_step: ``[N]`` flat update for ``step_fraction = 1`` (for TRPO ``-beta * s`` with
            ``H s = g`` and ``beta = sqrt(2 * max_kl / s.H s)``), ordered like
            :func:`flatten_params`.
        expected_improvement: predicted loss decrease of the full step (``-g . full_step``),
            used only with ``accept_ratio > 0``.
        max_kl: trust-region size, ``> 0``.
        ratio: shrink factor in ``(0, 1)``.
        max_steps: how many fractions to try, ``>= 1``.
        accept_ratio: minimal ratio of actual to expected improvement (0: any decrease).
        old_loss: the loss at ``params`` if already known (computed otherwise).

    Returns:
        A :class:`LineSearchResult`.
    """
    if not max_kl > 0:
        raise ValueError(f"max_kl must be positive, got {max_kl}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if accept_ratio < 0:
        raise ValueError(f"accept_ratio must be non-negative, got {accept_ratio}")
    params = dict(params)
    flat = flatten_params(params).detach()
    if full_step.shape != flat.shape:
        raise ValueError(
            f"full_step must be a flat vector of {flat.numel()} elements (the parameters' size), "
            f"got shape {tuple(full_step.shape)}"
        )
    loss0 = _scalar(objective(params)[0] if old_loss is None else old_loss)
    expected = _scalar(expected_improvement)
    rejected = LineSearchResult(False, params, 0.0, loss0, 0.0, loss0, 0)
    if not math.isfinite(loss0) or not bool(torch.isfinite(full_step).all()):
        return rejected
    step = full_step.detach().to(flat.dtype)
    for i in range(max_steps):
        fraction = ratio**i
        candidate_flat = flat + fraction * step
        if bool(torch.isfinite(candidate_flat).all()):
            candidate = {
                name: t.detach().clone().requires_grad_(params[name].requires_grad)
                for name, t in unflatten_params(candidate_flat, params).items()
            }
            loss_value, kl_value = objective(candidate)
            loss = _scalar(loss_value)
            improvement = loss0 - loss
            wanted = accept_ratio * fraction * expected if accept_ratio > 0 else 0.0
            if math.isfinite(loss) and improvement > 0 and improvement >= wanted:
                kl = _scalar(kl_value)
                if math.isfinite(kl) and kl <= max_kl:
                    return LineSearchResult(True, candidate, fraction, loss, kl, loss0, i + 1)
    return LineSearchResult(False, params, 0.0, loss0, 0.0, loss0, max_steps)


class BatchedAdam:
    """Adam (Kingma & Ba 2015) for ``K`` independent parameter sets stacked on a leading task axis.

    Parameters are name -> tensor dicts with shapes ``[K, ...]``; task ``k`` gets its own
    moments and step count, exactly as ``K`` separate :class:`torch.optim.Adam` instances (no
    weight decay, no amsgrad) would, but in one tensor operation per parameter. Functional: a
    step returns new parameter tensors and replaces the moment tensors instead of writing into
    them, so :meth:`copy` is cheap and an old copy stays valid.

    Args:
        params: ``[K, ...]`` tensors (only their shapes, dtypes and devices are used).
        lr: step size, ``> 0``.
        betas: moment decay rates, each in ``[0, 1)``.
        eps: added to the root of the second moment, ``>= 0``.
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        if not params:
            raise ValueError("BatchedAdam needs at least one parameter tensor")
        sizes = {k: (v.shape[0] if v.dim() else None) for k, v in params.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"every parameter needs the same leading task axis [K, ...]: {sizes}")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.num_tasks = int(next(iter(sizes.values())))  # type: ignore[arg-type]
        self.exp_avg = {
            k: torch.zeros_like(v, memory_format=torch.contiguous_format) for k, v in params.items()
        }
        self.exp_avg_sq = {
            k: torch.zeros_like(v, memory_format=torch.contiguous_format) for k, v in params.items()
        }
        first = next(iter(params.values()))
        self.steps = torch.zeros(self.num_tasks, dtype=torch.int64, device=first.device)
        """``[K]`` updates taken by each task."""

    def copy(self) -> BatchedAdam:
        """An independent optimizer in the same state (tensors are shared, never mutated)."""
        new = object.__new__(BatchedAdam)
        new.__dict__.update(self.__dict__)
        new.exp_avg, new.exp_avg_sq = dict(self.exp_avg), dict(self.exp_avg_sq)
        return new

    @torch.no_grad()
    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        active: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One Adam update of every task whose ``active`` flag is set.

        Args:
            params: ``[K, ...]`` current parameters.
            grads: ``[K, ...]`` their gradients (same keys).
            active: optional ``[K]`` bool; inactive tasks keep their parameters, moments and
                step count (how a non-finite update is skipped).

        Returns:
            The new ``[K, ...]`` parameters (fresh tensors, detached).
        """
        if set(params) != set(self.exp_avg) or set(grads) != set(self.exp_avg):
            raise ValueError(
                f"params and grads must have the optimizer's keys {sorted(self.exp_avg)}, got "
                f"{sorted(params)} and {sorted(grads)}"
            )
        K = self.num_tasks
        on = (
            torch.ones(K, dtype=torch.bool, device=self.steps.device)
            if active is None
            else active.to(device=self.steps.device, dtype=torch.bool)
        )
        if on.shape != (K,):
            raise ValueError(f"active must have shape [K] = ({K},), got {tuple(on.shape)}")
        beta1, beta2 = self.betas
        steps = self.steps + on.to(torch.int64)
        t = steps.clamp_min(1).to(torch.float64)
        # Bias corrections as torch.optim.Adam computes them (in double precision).
        step_size = self.lr / (1.0 - beta1**t)
        bc2_sqrt = torch.sqrt(1.0 - beta2**t)
        new_params: dict[str, Tensor] = {}
        for name, p in params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"grad {name!r} has shape {tuple(g.shape)}, not {tuple(p.shape)}")
            view = (K,) + (1,) * (p.dim() - 1)
            mask = on.view(view)
            m = torch.lerp(self.exp_avg[name], g, 1.0 - beta1)
            v = self.exp_avg_sq[name] * beta2 + (1.0 - beta2) * g * g
            denom = v.sqrt() / bc2_sqrt.to(p.dtype).view(view) + self.eps
            updated = p - step_size.to(p.dtype).view(view) * (m / denom)
            new_params[name] = torch.where(mask, updated, p).detach()
            self.exp_avg[name] = torch.where(mask, m, self.exp_avg[name])
            self.exp_avg_sq[name] = torch.where(mask, v, self.exp_avg_sq[name])
        self.steps = steps
        return new_params
