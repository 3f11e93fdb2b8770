"""Flat parameter vectors, conjugate gradient, Hessian-vector products and TRPO's line search."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from metarl.optim import (
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    flatten_params,
    hessian_vector_product,
    trpo_full_step,
    unflatten_params,
)
from metarl.policies import GaussianMLPPolicy, gaussian_log_prob

F64 = torch.float64


def test_flatten_unflatten_round_trip_on_policy_params() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(4, 2, hidden_sizes=(8,))
    params = policy.params()
    flat = flatten_params(params)
    assert flat.shape == (sum(p.numel() for p in params.values()),)
    back = unflatten_params(flat, params)
    assert list(back) == list(params)
    for name, p in params.items():
        assert back[name].shape == p.shape
        torch.testing.assert_close(back[name], p)
    with pytest.raises(ValueError, match="flat must be a vector of"):
        unflatten_params(flat[:-1], params)


def test_flat_grad_matches_autograd_and_zero_fills_unused() -> None:
    a = torch.randn(3, 2, dtype=F64, requires_grad=True)
    b = torch.randn(4, dtype=F64, requires_grad=True)
    unused = torch.randn(2, dtype=F64, requires_grad=True)
    out = (a.sin().sum() * b.pow(2).sum()).reshape(())
    g = flat_grad(out, {"a": a, "b": b, "c": unused})
    expected = torch.cat([(a.cos() * b.pow(2).sum()).reshape(-1), 2 * b * a.sin().sum()])
    torch.testing.assert_close(g[:10], expected)
    assert (g[10:] == 0).all()


def _spd(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen, dtype=F64)
    return m @ m.T + 0.5 * n * torch.eye(n, dtype=F64)


def _counted(A: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[int]]:
    """``v -> A v`` and the list it appends to on every call."""
    calls: list[int] = []

    def Avp(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return A @ v

    return Avp, calls


def test_conjugate_gradient_solves_random_spd_system() -> None:
    A = _spd(20, 0)
    b = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=F64)
    Avp, calls = _counted(A)
    x = conjugate_gradient(Avp, b, iters=20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=0, atol=1e-6)
    assert (A @ x - b).pow(2).sum().item() < 1e-10  # the stopping rule: squared residual
    assert len(calls) <= 20
    # Few iterations give a worse (but improving) answer: the cap is honoured.
    r3 = (A @ conjugate_gradient(Avp, b, iters=3) - b).norm()
    r6 = (A @ conjugate_gradient(Avp, b, iters=6) - b).norm()
    assert r6 < r3 < b.norm()
    assert (conjugate_gradient(Avp, torch.zeros(20, dtype=F64)) == 0).all()


def test_trpo_full_step_has_the_kl_bound_as_its_quadratic_kl() -> None:
    """The step solves ``A x = g`` by CG and is scaled so that ``s.A s / 2 = max_kl``, ``A x``
    from CG's own products (no further product)."""
    A = _spd(30, 2)
    g = torch.randn(30, generator=torch.Generator().manual_seed(3), dtype=F64)
    Avp, calls = _counted(A)
    step, expected = trpo_full_step(Avp, g, 0.02, iters=6)
    assert len(calls) == 6  # A x from CG's own products
    assert float(step @ A @ step) / 2 == pytest.approx(0.02, rel=1e-10)
    x = conjugate_gradient(lambda v: A @ v, g, iters=6)
    assert float(step @ x) < 0
    torch.testing.assert_close(step / step.norm(), -x / x.norm())
    assert expected == pytest.approx(-float(g @ step))
    zero, improvement = trpo_full_step(lambda v: A @ v, torch.zeros(30, dtype=F64), 0.01)
    assert bool((zero == 0).all()) and improvement == 0.0


def _nonquadratic(p: dict[str, torch.Tensor]) -> torch.Tensor:
    w, c = p["w"], p["c"]
    x = torch.linspace(-1.0, 1.0, 5, dtype=F64, device=w.device)
    return torch.tanh(w @ x + c).pow(2).sum() + (w.exp() * c.sum()).sum() + c.pow(4).sum()


def test_hvp_equals_explicit_hessian_times_v_plus_damping() -> None:
    gen = torch.Generator().manual_seed(2)
    params = {
        "w": torch.randn(3, 5, generator=gen, dtype=F64).requires_grad_(),
        "c": torch.randn(3, generator=gen, dtype=F64).requires_grad_(),
    }
    flat = flatten_params(params).detach()
    H = torch.autograd.functional.hessian(
        lambda f: _nonquadratic(unflatten_params(f, params)), flat
    )
    hvp = hessian_vector_product(_nonquadratic, params, damping=0.1)
    for _ in range(3):  # the closure is reusable
        v = torch.randn(flat.numel(), generator=gen, dtype=F64)
        torch.testing.assert_close(hvp(v), H @ v + 0.1 * v)
    with pytest.raises(ValueError, match="v must be a vector of 18"):
        hvp(torch.zeros(17, dtype=F64))


def _policy_kl_setup() -> tuple[GaussianMLPPolicy, dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(16,))
    obs = torch.randn(64, 3)
    with torch.no_grad():
        mean, log_std = policy(obs)
        actions = mean + log_std.exp() * torch.randn_like(mean)
        old_log_prob = gaussian_log_prob(actions, mean, log_std)
    return policy, policy.params(), obs, actions, old_log_prob


def _kl_to(policy: GaussianMLPPolicy, obs: torch.Tensor):
    with torch.no_grad():
        old_mean, old_log_std = policy(obs)

    def kl(p: dict[str, torch.Tensor]) -> torch.Tensor:
        mean, log_std = policy.functional(obs, p)
        var, old_var = (2 * log_std).exp(), (2 * old_log_std).exp()
        per_dim = log_std - old_log_std + (old_var + (old_mean - mean) ** 2) / (2 * var) - 0.5
        return per_dim.sum(-1).mean()

    return kl


def both(loss_fn: Callable, kl_fn: Callable) -> Callable:
    """The line search's objective: ``params -> (loss, kl)``."""
    return lambda p: (loss_fn(p), kl_fn(p))


def test_trpo_step_on_a_policy_keeps_kl_and_improves() -> None:
    policy, params, obs, actions, old_log_prob = _policy_kl_setup()
    advantages = torch.randn(64, generator=torch.Generator().manual_seed(4))
    kl_fn = _kl_to(policy, obs)

    def loss_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        ratio = torch.exp(policy.log_prob(obs, actions, p) - old_log_prob)
        return -(ratio * advantages).mean()

    max_kl = 0.01
    g = flat_grad(loss_fn(params), params)
    hvp = hessian_vector_product(kl_fn, params, damping=1e-5)
    s = conjugate_gradient(hvp, g, iters=10)
    beta = math.sqrt(2 * max_kl / (s @ hvp(s)).item())
    full_step = -beta * s
    result = backtracking_line_search(
        both(loss_fn, kl_fn), params, full_step, -(g @ full_step).item(), max_kl
    )
    assert result.accepted
    assert result.kl <= max_kl
    assert result.loss < result.old_loss
    assert kl_fn(result.params).item() == pytest.approx(result.kl)
    expected = flatten_params(params).detach() + result.step_fraction * full_step
    torch.testing.assert_close(flatten_params(result.params), expected)
    assert all(p.requires_grad and p.is_leaf for p in result.params.values())


def _quadratic_problem() -> tuple[dict[str, torch.Tensor], object, object]:
    w0 = torch.tensor([1.0, 1.0], dtype=F64)
    params = {"w": w0.clone().requires_grad_()}
    loss_fn = lambda p: p["w"].pow(2).sum()  # noqa: E731
    kl_fn = lambda p: (p["w"] - w0).pow(2).sum()  # noqa: E731
    return params, loss_fn, kl_fn


def test_line_search_accepts_full_step_when_allowed() -> None:
    params, loss_fn, kl_fn = _quadratic_problem()
    step = torch.tensor([-1.0, -1.0], dtype=F64)  # straight to the minimum; KL there is 2
    result = backtracking_line_search(both(loss_fn, kl_fn), params, step, 2.0, max_kl=3.0)
    assert (result.accepted, result.step_fraction, result.tries) == (True, 1.0, 1)
    assert (result.loss, result.kl, result.old_loss) == (0.0, 2.0, 2.0)


def test_line_search_shrinks_until_kl_fits() -> None:
    params, loss_fn, kl_fn = _quadratic_problem()
    step = torch.tensor([-1.0, -1.0], dtype=F64)
    # KL(f) = 2 f^2 <= 0.5 needs f <= 0.5: 0.8**4 = 0.4096 is the first fraction that fits.
    result = backtracking_line_search(both(loss_fn, kl_fn), params, step, 2.0, max_kl=0.5)
    assert result.accepted and result.tries == 5
    assert result.step_fraction == pytest.approx(0.8**4)
    assert result.kl <= 0.5
    torch.testing.assert_close(result.params["w"], torch.full((2,), 1 - 0.8**4, dtype=F64))


def test_line_search_rejects_uphill_and_returns_original_params() -> None:
    params, loss_fn, kl_fn = _quadratic_problem()
    result = backtracking_line_search(
        both(loss_fn, kl_fn), params, torch.tensor([1.0, 1.0], dtype=F64), -2.0, max_kl=10.0
    )
    assert not result.accepted and result.tries == 15
    assert result.params["w"] is params["w"] and result.step_fraction == 0.0
    assert result.loss == result.old_loss == 2.0


@pytest.mark.parametrize("where", ["loss", "kl", "step"])
def test_line_search_never_accepts_nan(where: str) -> None:
    params, loss_fn, kl_fn = _quadratic_problem()
    step = torch.tensor([-1.0, -1.0], dtype=F64)
    if where == "loss":
        nan_loss = lambda p: loss_fn(p) * math.nan if p["w"][0] < 1 else loss_fn(p)  # noqa: E731
        result = backtracking_line_search(both(nan_loss, kl_fn), params, step, 2.0, max_kl=3.0)
    elif where == "kl":
        nan_kl = lambda p: torch.tensor(math.nan)  # noqa: E731
        result = backtracking_line_search(both(loss_fn, nan_kl), params, step, 2.0, max_kl=3.0)
    else:
        step = torch.tensor([math.nan, -1.0], dtype=F64)
        result = backtracking_line_search(both(loss_fn, kl_fn), params, step, 2.0, max_kl=3.0)
        assert result.tries == 0
    assert not result.accepted
    assert result.params["w"] is params["w"]
    assert torch.isfinite(result.params["w"]).all()


def test_line_search_candidates_support_inner_gradient_steps() -> None:
    # MAML's outer loss adapts the candidate with an inner gradient step, so candidates must
    # be differentiable leaves.
    params, _, kl_fn = _quadratic_problem()

    def adapted_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        (g,) = torch.autograd.grad(p["w"].pow(2).sum(), [p["w"]], create_graph=True)
        return (p["w"] - 0.1 * g).pow(2).sum()

    step = torch.tensor([-0.5, -0.5], dtype=F64)
    result = backtracking_line_search(both(adapted_loss, kl_fn), params, step, 1.0, max_kl=1.0)
    assert result.accepted and result.loss == pytest.approx((0.5 * 0.8) ** 2 * 2)


def test_line_search_accept_ratio_uses_expected_improvement() -> None:
    params, loss_fn, kl_fn = _quadratic_problem()
    step = torch.tensor([-1.0, -1.0], dtype=F64)
    # Claiming a 100x larger improvement than achievable makes every fraction fall short.
    result = backtracking_line_search(
        both(loss_fn, kl_fn), params, step, 200.0, max_kl=3.0, accept_ratio=0.1
    )
    assert not result.accepted
    with pytest.raises(ValueError, match="max_kl must be positive"):
        backtracking_line_search(both(loss_fn, kl_fn), params, step, 2.0, max_kl=0.0)
    with pytest.raises(ValueError, match="full_step must be a flat vector of 2"):
        backtracking_line_search(both(loss_fn, kl_fn), params, step[:1], 2.0, max_kl=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_hvp_cg_and_line_search_match_cpu() -> None:
    gen = torch.Generator().manual_seed(5)
    cpu = {
        "w": torch.randn(3, 5, generator=gen, dtype=F64).requires_grad_(),
        "c": torch.randn(3, generator=gen, dtype=F64).requires_grad_(),
    }
    cuda = {k: v.detach().cuda().requires_grad_() for k, v in cpu.items()}
    v = torch.randn(18, generator=gen, dtype=F64)
    hv_cpu = hessian_vector_product(_nonquadratic, cpu, 0.1)(v)
    hv_cuda = hessian_vector_product(_nonquadratic, cuda, 0.1)(v.cuda())
    assert hv_cuda.device.type == "cuda"
    torch.testing.assert_close(hv_cuda.cpu(), hv_cpu)
    A = _spd(20, 6)
    b = torch.ones(20, dtype=F64)
    x = conjugate_gradient(lambda p: A.cuda() @ p, b.cuda(), iters=20)
    assert x.device.type == "cuda"
    torch.testing.assert_close(x.cpu(), torch.linalg.solve(A, b), rtol=0, atol=1e-6)
    loss_fn = lambda p: p["c"].pow(2).sum()  # noqa: E731
    kl_fn = lambda p: (p["c"] - cuda["c"].detach()).pow(2).sum()  # noqa: E731
    step = -torch.cat([torch.zeros(15, dtype=F64), cpu["c"].detach()]).cuda()
    # KL(f) = f^2 |c|^2 with |c|^2 = 1.26 here: 0.8**3 is the first fraction under 0.5.
    result = backtracking_line_search(both(loss_fn, kl_fn), cuda, step, 1.0, max_kl=0.5)
    assert result.accepted and result.kl <= 0.5 and result.tries == 4
    assert all(p.device.type == "cuda" for p in result.params.values())
