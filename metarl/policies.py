"""Policies with functional parameters.

A policy's ``forward(obs) -> (mean, log_std)`` is a pure function of its parameters, so the
same module serves as the meta-parameters and, through :func:`torch.func.functional_call`, as
any number of per-task adapted parameter sets (batched over tasks with :func:`torch.func.vmap`).
Sampling noise is drawn outside the network (by the sampler, from per-slot generators), which
keeps the forward pass deterministic and vmappable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metarl.activations import ACTIVATIONS

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "RECURRENT_CELLS",
    "GaussianMLPPolicy",
    "MLPValue",
    "Params",
    "RecurrentGaussianPolicy",
    "gaussian_entropy",
    "gaussian_log_prob",
    "mlp",
    "stack_params",
]

Params = dict[str, Tensor]

INITS = ("torch", "xavier")
"""Initializations of :class:`GaussianMLPPolicy`'s mean network."""

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(actions: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Log-density of a diagonal Gaussian, summed over the last (action) axis: ``[...]``."""
    z = (actions - mean) * torch.exp(-log_std)
    return -(0.5 * z.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)


def stack_params(param_sets: Sequence[Mapping[str, Tensor]]) -> Params:
    """Stack K parameter dicts into one dict with a leading task axis ``[K, ...]``."""
    if not param_sets:
        raise ValueError("stack_params needs at least one parameter set")
    keys = list(param_sets[0])
    for i, p in enumerate(param_sets):
        if list(p) != keys:
            raise ValueError(f"parameter set {i} has keys {list(p)}, expected {keys}")
    return {k: torch.stack([p[k] for p in param_sets]) for k in keys}


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """``Linear, activation, ..., Linear``: the MLP of the policies and value networks.

    Hidden layers of ``hidden_sizes`` widths, each followed by the activation
    (``ACTIVATIONS[activation]``), then a linear output layer of ``out_dim``; the parameters
    are ``{2 i}.weight`` and ``{2 i}.bias`` of linear layer ``i``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation].module()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GaussianMLPPolicy(nn.Module):
    """A Gaussian policy: MLP mean, state-independent log standard deviation.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: widths of the hidden layers ((64, 64) tanh by default; the MAML paper
            uses (100, 100) ReLU).
        activation: a name in :data:`~metarl.activations.ACTIVATIONS` (tanh, relu or elu).
        init_std: initial standard deviation of every action dimension.
        init: the mean network's initialization: ``"torch"`` (``nn.Linear``'s own, uniform
            weights and biases of scale ``1 / sqrt(fan_in)``) or ``"xavier"`` (Xavier-uniform
            weights and zero biases, as rllab's and maml_rl's policies).
    """

    recurrent = False

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_std: float = 1.0,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be positive, got {obs_dim}, {act_dim}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.mean_net = mlp(self.obs_dim, self.hidden_sizes, self.act_dim, activation)
        if init == "xavier":
            for layer in self.mean_net:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), math.log(init_std)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [..., obs_dim] -> (mean [..., act_dim], log_std [..., act_dim])``."""
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    def params(self) -> Params:
        """The meta-parameters as a name -> tensor dict (shared storage, requires grad)."""
        return dict(self.named_parameters())

    def per_task(self, params: Mapping[str, Tensor], obs: Tensor) -> tuple[Tensor, Tensor]:
        """``forward`` of K parameter sets at once: ``params`` stacked on a leading task axis
        (``[K, ...]``), ``obs [K, N, obs_dim]`` -> ``(mean, log_std)``, each ``[K, N, act_dim]``.

        The same as ``vmap`` of :meth:`functional` over the task axis, with each layer one
        batched ``baddbmm`` (fewer kernels than vmap's batching of ``linear``).
        """
        h = obs
        for i, layer in enumerate(self.mean_net):
            if isinstance(layer, nn.Linear):
                bias, weight = params[f"mean_net.{i}.bias"], params[f"mean_net.{i}.weight"]
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.mT)
            else:
                h = layer(h)
        return h, params["log_std"].unsqueeze(1).expand_as(h)

    def functional(
        self, obs: Tensor, params: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``forward`` with ``params`` in place of the module's own (None: its own)."""
        if params is None:
            return self(obs)
        return functional_call(self, dict(params), (obs,))

    def log_prob(
        self, obs: Tensor, actions: Tensor, params: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Log-probability of ``actions`` under the policy with ``params``: ``[...]``."""
        mean, log_std = self.functional(obs, params)
        return gaussian_log_prob(actions, mean, log_std)


class MLPValue(nn.Module):
    """A state-value network: an MLP ``obs [..., obs_dim] -> value [...]``.

    Functional like the policies: evaluate other parameter sets with
    :func:`torch.func.functional_call` (PPO's critic in Reptile-PPO, meta-learned with the
    policy).

    Args:
        obs_dim: observation size.
        hidden_sizes: widths of the hidden layers.
        activation: a name in :data:`~metarl.activations.ACTIVATIONS` (tanh, relu or elu).
    """

    def __init__(
        self, obs_dim: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        if obs_dim < 1:
            raise ValueError(f"obs_dim must be positive, got {obs_dim}")
        self.obs_dim = int(obs_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.net = mlp(self.obs_dim, self.hidden_sizes, 1, activation)

    def forward(self, obs: Tensor) -> Tensor:
        """``obs [..., obs_dim] -> value [...]``."""
        return self.net(obs).squeeze(-1)

    def params(self) -> Params:
        """The parameters as a name -> tensor dict (shared storage, requires grad)."""
        return dict(self.named_parameters())


RECURRENT_CELLS: dict[str, int] = {"lstm": 4, "gru": 3}
"""Recurrent cell name -> number of gate blocks in its weight matrices."""


class RecurrentGaussianPolicy(nn.Module):
    """A recurrent Gaussian policy with a value head, for RL^2 (Duan et al. 2016).

    The input at step ``t`` is ``[obs_t, a_{t-1}, r_{t-1}, d_{t-1}]`` (``obs_dim + act_dim + 2``
    wide, built by the sampler, or from a stored batch by
    :func:`metarl.sampling.recurrent_inputs`); the recurrent state is one tensor
    ``[B, state_size]`` (``[h, c]`` for an LSTM, ``h`` for a GRU) carried across the episodes
    of a trial. The cell is written out with two linear layers (PyTorch's gate order and
    equations) so that :func:`torch.func.functional_call` and :func:`torch.func.vmap` see plain
    modules. The mean and the value are linear heads on ``h``; ``log_std`` is state-independent.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_size: width of the recurrent state ``h``.
        cell: ``"lstm"`` or ``"gru"``.
        init_std: initial standard deviation of every action dimension.
    """

    recurrent = True
    fused_sequences = True
    """Run sequences through PyTorch's fused LSTM/GRU kernel (False: the step loop, vmappable)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_size: int = 64,
        cell: str = "lstm",
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be positive, got {obs_dim}, {act_dim}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        if cell not in RECURRENT_CELLS:
            raise ValueError(f"cell must be one of {sorted(RECURRENT_CELLS)}, got {cell!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_size, self.cell = int(hidden_size), cell
        self.input_dim = self.obs_dim + self.act_dim + 2
        self.state_size = 2 * self.hidden_size if cell == "lstm" else self.hidden_size
        gates = RECURRENT_CELLS[cell] * self.hidden_size
        self.input_to_hidden = nn.Linear(self.input_dim, gates)
        self.hidden_to_hidden = nn.Linear(self.hidden_size, gates)
        self.mean_head = nn.Linear(self.hidden_size, self.act_dim)
        self.value_head = nn.Linear(self.hidden_size, 1)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), math.log(init_std)))
        # The same cell as torch.nn.LSTM / GRU (gate order and equations), so a sequence can
        # run through their fused kernel (~9x faster forward + backward over 800 steps on one
        # CPU thread); kept in a tuple so it is not a submodule: its weights are this module's.
        kernel = nn.LSTM if cell == "lstm" else nn.GRU
        self._kernel = (kernel(self.input_dim, self.hidden_size),)
        with torch.no_grad():
            # A near-zero initial mean, as in cleanrl's PPO (std 0.01 on the policy's last layer).
            self.mean_head.weight.mul_(0.01)
            self.mean_head.bias.zero_()

    def initial_state(self, batch_size: int) -> Tensor:
        """The state at the start of a trial: zeros ``[batch_size, state_size]``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        weight = self.hidden_to_hidden.weight
        return torch.zeros(batch_size, self.state_size, dtype=weight.dtype, device=weight.device)

    def _cell(self, gates_in: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One recurrent step from the projected input: ``(h [B, H], new state [B, S])``."""
        H = self.hidden_size
        if self.cell == "lstm":
            h, c = state[..., :H], state[..., H:]
            gates = gates_in + self.hidden_to_hidden(h)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return h, torch.cat([h, c], dim=-1)
        gates_h = self.hidden_to_hidden(state)
        ir, iz, i_n = gates_in.chunk(3, dim=-1)
        hr, hz, h_n = gates_h.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(i_n + r * h_n)
        h = (1.0 - z) * n + z * state
        return h, h

    def _fused_sequence(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """A sequence through PyTorch's fused kernel with this module's (current) weights."""
        weights = {
            "weight_ih_l0": self.input_to_hidden.weight,
            "weight_hh_l0": self.hidden_to_hidden.weight,
            "bias_ih_l0": self.input_to_hidden.bias,
            "bias_hh_l0": self.hidden_to_hidden.bias,
        }
        H = self.hidden_size
        if self.cell == "lstm":
            h0, c0 = state[..., :H].unsqueeze(0), state[..., H:].unsqueeze(0)
            out, (hn, cn) = functional_call(self._kernel[0], weights, (inputs, (h0, c0)))
            return out, torch.cat([hn[0], cn[0]], dim=-1)
        out, hn = functional_call(self._kernel[0], weights, (inputs, state.unsqueeze(0)))
        return out, hn[0]

    def _check(self, inputs: Tensor, state: Tensor) -> bool:
        """Validate shapes; True for a sequence ``[T, B, in]``, False for one step ``[B, in]``."""
        if inputs.shape[-1] != self.input_dim:
            raise ValueError(
                f"inputs must be [..., obs_dim + act_dim + 2 = {self.input_dim}] "
                f"([obs, previous action, previous reward, done]), got {tuple(inputs.shape)}"
            )
        if state.shape[-1] != self.state_size:
            raise ValueError(
                f"state must be [B, {self.state_size}] for a {self.cell} of hidden size "
                f"{self.hidden_size}, got {tuple(state.shape)}"
            )
        sequence = inputs.dim() == state.dim() + 1
        if inputs.shape[int(sequence) : -1] != state.shape[:-1] or not (
            sequence or inputs.dim() == state.dim()
        ):
            raise ValueError(
                f"the state's batch shape {tuple(state.shape[:-1])} does not match the inputs "
                f"{tuple(inputs.shape)} (one step [B, in] or a sequence [T, B, in]); start a "
                "trial with initial_state(B)"
            )
        return sequence

    def forward(
        self, inputs: Tensor, state: Tensor, return_values: bool = False
    ) -> tuple[Tensor, ...]:
        """One step or a whole sequence from ``state``.

        Args:
            inputs: ``[B, in]`` (one step) or ``[T, B, in]`` (a sequence).
            state: ``[B, state_size]``, the state before the first input.
            return_values: also return the value head's predictions.

        Returns:
            ``(mean, log_std, new_state)``, or ``(mean, log_std, values, new_state)`` with
            ``return_values``: mean and log_std ``[..., act_dim]``, values ``[...]`` (the
            inputs' leading shape) and the state after the last input ``[B, state_size]``.
        """
        sequence = self._check(inputs, state)
        if sequence and self.fused_sequences:
            h, state = self._fused_sequence(inputs, state)
        elif sequence:
            gates_in = self.input_to_hidden(inputs)
            outputs = []
            for t in range(inputs.shape[0]):
                h, state = self._cell(gates_in[t], state)
                outputs.append(h)
            h = torch.stack(outputs)
        else:
            h, state = self._cell(self.input_to_hidden(inputs), state)
        mean = self.mean_head(h)
        log_std = self.log_std.expand_as(mean)
        if return_values:
            return mean, log_std, self.value_head(h).squeeze(-1), state
        return mean, log_std, state

    def params(self) -> Params:
        """The parameters as a name -> tensor dict (shared storage, requires grad)."""
        return dict(self.named_parameters())

    def functional(
        self, inputs: Tensor, state: Tensor, params: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` with ``params`` in place of the module's own (None: its own)."""
        if params is None:
            out = self(inputs, state)
        else:
            out = functional_call(self, dict(params), (inputs, state))
        return out[0], out[1], out[2]

    def evaluate(
        self, inputs: Tensor, state: Tensor, params: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(mean, log_std, values, final_state)`` over ``inputs`` from ``state``."""
        if params is None:
            out = self(inputs, state, True)
        else:
            out = functional_call(self, dict(params), (inputs, state, True))
        return out[0], out[1], out[2], out[3]

    def log_prob(
        self,
        inputs: Tensor,
        actions: Tensor,
        state: Tensor,
        params: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Log-probability of ``actions [..., act_dim]`` after ``inputs`` from ``state``: ``[...]``.

        Args:
            inputs: ``[B, in]`` or ``[T, B, in]``.
            actions: ``[B, act_dim]`` or ``[T, B, act_dim]``.
            state: ``[B, state_size]`` before the first input.
            params: parameters in place of the module's own (None: its own).
        """
        mean, log_std, _ = self.functional(inputs, state, params)
        return gaussian_log_prob(actions, mean, log_std)
