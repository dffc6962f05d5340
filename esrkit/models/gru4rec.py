"""GRU4Rec encoder (Hidasi et al. 2016) as the official LLM-ESR code runs it: one bias-free ``nn.GRU``, no
positions, no scaling, no dropout, output at the last position.

Faithfulness detail: the official code left-pads every sequence to ``max_len`` and feeds the padding through
the GRU, so the state entering the first real item is the GRU run over ``n`` padding inputs. With
``pad_count`` given, this encoder reproduces that state exactly without the padded arithmetic where it can:
the trimmed batch keeps at least one padding column on the left (its input is the padding vector), and the
``max_len - L`` padding steps that were cut are run once — for a single sequence when every row shares the
padding vector (``shared_pad``), otherwise per row. Without ``pad_count`` the GRU starts from zeros at the
first real item.

Where the padding input is the zero vector (every LLMInit table; the official ID table's padding row is
xavier-initialised like the rest, so not the ID model), the bias-free GRU's zero state stays exactly zero
through any number of padding steps, so no gradient needs to run back through them: each row is run over its
real items first, from the zero state, with its padding after them, where the states are dropped. The same
states, and the same gradients wherever the official run's are finite (every padding step contributes zero).
Run first, the padding's backward multiplies by the recurrence's Jacobian at zero, 0.5 I + 0.25 W_hn, once per
step; once training has grown it past 1, some 190 steps overflow, and inf x 0 turns the weights to NaN
(docs/RESULTS.md, "Another backbone"): through the padding steps cut from the batch, and on Beauty 5-core,
whose batches mix long and short histories, through a short row's padding inside the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esrkit.models.base import ENCODERS


@ENCODERS.register("gru4rec", objective="last", inputs="plain")
class GRU4RecEncoder(nn.Module):
    needs_leading_pad = True  # the model keeps one padding column so the padding input can be read

    def __init__(self, hidden: int, layers: int = 1, **_: object) -> None:
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, bias=False, batch_first=True)
        self._shared_cache: tuple | None = None  # (key, padding input, states after 0..n padding steps)

    def forward(
        self, x: Tensor, mask: Tensor, pad_count: Tensor | None = None, shared_pad: bool = False, **_: object
    ) -> Tensor:
        if pad_count is None or not bool(x[~mask].any()):  # no emulation, or padding that leaves h at 0
            return self._forward_unpadded(x, mask)
        B, L, _ = x.shape
        lengths = mask.sum(1)
        # padding steps that were trimmed away: the same for every row (= max_len - L) unless a row is full
        cut = pad_count + lengths - L
        steps = int(cut.max()) if B else 0
        if steps <= 0:
            out, _ = self.gru(x)
            return out
        if shared_pad:
            h = self._shared_pad_state(x[:1, 0], steps).expand(-1, B, -1).contiguous()
        else:
            h = self._pad_run(x[:, 0], steps)
        out, _ = self.gru(x, h)
        return out

    def _shared_pad_state(self, pad_input: Tensor, steps: int) -> Tensor:
        """State after ``steps`` padding inputs, shared by every row. The trajectory is cached while the
        weights, the padding input and the autograd mode are unchanged, so the length buckets and passes of
        one training step (and a whole evaluation) run the padding once instead of once per call."""
        w = (self.gru.weight_ih_l0, self.gru.weight_hh_l0)
        key = (torch.is_grad_enabled(), w[0]._version, w[1]._version, w[0].data_ptr(), w[1].data_ptr())
        cache = self._shared_cache
        if (
            cache is None
            or cache[0] != key
            or cache[2].shape[0] <= steps
            or not torch.equal(cache[1], pad_input.detach())
        ):
            states = self._pad_trajectory(pad_input, steps)
            self._shared_cache = cache = (key, pad_input.detach().clone(), states)
        return cache[2][steps]

    def _pad_trajectory(self, pad_input: Tensor, steps: int) -> Tensor:
        """(steps + 1, layers, 1, d): the state after 0, 1, ..., steps padding inputs (one row)."""
        if self.gru.num_layers != 1 or pad_input.device.type != "cpu":
            out, _ = self.gru(pad_input.unsqueeze(1).expand(-1, steps, -1))
            if self.gru.num_layers != 1:  # only the last state is kept for stacked GRUs
                zeros = out.new_zeros(self.gru.num_layers, 1, out.shape[-1])
                return torch.stack([zeros] * steps + [self._pad_run(pad_input, steps)])
            states = torch.cat([out.new_zeros(1, out.shape[-1]), out[0]], 0)
            return states.view(steps + 1, 1, 1, -1)
        states = [pad_input.new_zeros(pad_input.shape)]
        gates, gi_n, w_hh = self._constant_input_terms(pad_input)
        h = states[0]
        for _ in range(steps):
            h = self._cell(h, gates, gi_n, w_hh)
            states.append(h)
        return torch.stack(states).unsqueeze(1)

    def _constant_input_terms(self, pad_input: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input projection, computed once: [gi_r, gi_z, 0] (added inside the hidden matmul), gi_n,
        W_hh^T."""
        gi = pad_input @ self.gru.weight_ih_l0.T
        d = pad_input.shape[-1]
        gates = torch.cat([gi[:, : 2 * d], torch.zeros_like(gi[:, 2 * d :])], 1)
        return gates, gi[:, 2 * d :], self.gru.weight_hh_l0.T

    @staticmethod
    def _cell(h: Tensor, gates: Tensor, gi_n: Tensor, w_hh: Tensor) -> Tensor:
        """One GRU step (PyTorch's equations, no bias) in six ops: r, z = sigmoid(gi + h W_hr/hz);
        n = tanh(gi_n + r * (h W_hn)); h' = n + z * (h - n)."""
        g = torch.addmm(gates, h, w_hh)  # [gi_r + gh_r, gi_z + gh_z, gh_n]
        d = h.shape[-1]
        rz = torch.sigmoid(g[:, : 2 * d])
        n = torch.tanh(torch.addcmul(gi_n, rz[:, :d], g[:, 2 * d :]))
        return torch.addcmul(n, rz[:, d:], h - n)

    def _pad_run(self, pad_input: Tensor, steps: int) -> Tensor:
        """The GRU state after ``steps`` identical inputs per row, from zeros: (layers, rows, d).

        The input is constant, so for one layer its projection is computed once and each step only multiplies
        the hidden state (faster than ``nn.GRU`` over the expanded input on a CPU, benchmarks/RESULTS.md; same
        arithmetic). On a GPU the step-by-step loop is launch-bound, and cuDNN's fused GRU over the expanded
        input is faster."""
        if self.gru.num_layers != 1 or pad_input.device.type != "cpu":
            _, h = self.gru(pad_input.unsqueeze(1).expand(-1, steps, -1))
            return h
        gates, gi_n, w_hh = self._constant_input_terms(pad_input)
        h = pad_input.new_zeros(pad_input.shape)
        for _ in range(steps):
            h = self._cell(h, gates, gi_n, w_hh)
        return h.unsqueeze(0)

    def _forward_unpadded(self, x: Tensor, mask: Tensor) -> Tensor:
        """Run each sequence from a zero state over its real items first: the rows are left-aligned, so their
        padding comes after the last real item, where the states are dropped and no gradient reaches them
        (zero x a finite Jacobian), instead of before the first, where the backward runs through every padding
        step (benchmarks/RESULTS.md, "GRU4Rec: padding steps")."""
        B, L, d = x.shape
        shift = (L - mask.sum(1)).view(B, 1)
        rows = torch.arange(B, device=x.device).view(B, 1) * L
        steps = torch.arange(L, device=x.device).view(1, L)
        left = ((steps + shift) % L + rows).view(-1)  # flat index of each left-aligned position's vector
        right = ((steps - shift) % L + rows).view(-1)  # and back: the inverse permutation
        out, _ = self.gru(_PermuteRows.apply(x.reshape(B * L, d), left, right).view(B, L, d))
        out = _PermuteRows.apply(out.reshape(B * L, -1), right, left).view(B, L, -1)
        return out * mask.unsqueeze(-1).to(out.dtype)


class _PermuteRows(torch.autograd.Function):
    """rows[order], whose gradient is the gradient's rows in the inverse order: a gather both ways, where
    autograd's index_select would scatter-add into a zero-filled buffer."""

    @staticmethod
    def forward(ctx, rows: Tensor, order: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return rows.index_select(0, order)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None
