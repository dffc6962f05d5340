"""Ranking losses: how the scored hidden states of a batch are trained against items (``model.loss``).

Every loss sees ``m`` scored hidden states ``h`` (one per target: every real position for seq2seq, the masked
ones for cloze, the last for GRU4Rec), their positive item ids and, where the loss uses per-position
negatives, the batch's negatives (m, k). Scores are always dot products ``h . e_j`` with the model's item
vectors, so a loss works for every model family and backbone.

* ``bce`` (official LLM-ESR): binary cross-entropy on the positive and the negatives, each term averaged over
  its own logits, summed. One uniform negative by default (``train.negatives``).
* ``bpr``: the paper's pairwise Eq. (6), ``-log sigmoid(s_pos - s_neg)``.
* ``gbce`` (Petrov & Macdonald, RecSys 2023): BCE whose positive term is raised to the power ``beta``, which
  undoes the overconfidence that sampling ``k`` of ``N - 1`` negatives causes. ``model.gbce_t`` = 0 is plain
  BCE.
* ``ce``: softmax cross-entropy over every real item (never padding or [MASK]), fused: blocks of rows whose
  gradients are computed while their scores are in cache, so memory is rows x N, not m x N.
* ``sampled_softmax``: softmax over the positive and ``k`` negatives shared by the whole batch, drawn
  uniformly, by training popularity, or taken from the batch's own positives (``model.loss_sampler``), each
  corrected by ``-log(k Q(j))`` (logQ correction); a negative equal to a row's positive is masked out.

``model.view_losses`` (models with several score views, i.e. LLM-ESR) adds the same loss on each view's own
logits beside the loss on the fused logits. ``model.popularity_adjust`` (``ce``, ``sampled_softmax``) adds
tau x log popularity to each item's training logit (logit adjustment); ``model.ce_precision=bfloat16`` runs
``ce``'s catalogue products with bfloat16 factors; ``model.label_smoothing`` spreads that share of every
target's mass evenly over the catalogue (``ce``), ``model.neighbour_smoothing`` over the target's text
neighbours (``ce``; models that list them, ``target_neighbours``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from esrkit.config import LOSS_SAMPLERS
from esrkit.registry import LOSSES  # the instance lives in the foundation layer (config checks loss names)

SAMPLERS = LOSS_SAMPLERS


@dataclass(frozen=True)
class LossSpec:
    """Which ranking loss and its options (from ModelConfig/TrainConfig)."""

    name: str = "bce"
    negatives: int = 1  # bce/bpr/gbce: per position; sampled_softmax: shared by the batch
    sampler: str = "uniform"  # sampled_softmax: uniform | popularity | in_batch
    gbce_t: float = 0.75  # gbce calibration t in [0, 1]
    view_losses: bool = False
    chunk_rows: int = 0  # ce: scored rows per fused block; 0 = automatic (_auto_rows: bounded memory)
    popularity_adjust: float = 0.0  # ce/sampled_softmax: tau of the logit adjustment (training only)
    ce_precision: str = "float32"  # ce: float32 | bfloat16 (the three catalogue products in bfloat16)
    label_smoothing: float = 0.0  # ce: share of each target's mass spread evenly over every item
    neighbour_smoothing: float = 0.0  # ce: share of each target's mass moved to its text neighbours

    @property
    def batch_negatives(self) -> int:
        """Negatives the batch builder draws per position (the softmax losses draw their own, or none)."""
        return self.negatives if LOSSES.meta(self.name).get("per_position_negatives") else 0


class ItemScorer:
    """Item vectors for a loss, optionally restricted to one score view (a slice of the vector)."""

    def __init__(self, model, view: slice | None = None) -> None:
        self.model, self.view = model, view

    def vectors(self, ids: Tensor) -> Tensor:
        v = self.model.item_vectors(ids)
        return v if self.view is None else v[..., self.view]

    def all_real(self) -> Tensor:
        """(n_items, D): rows 1..n_items (row j-1 = item j); padding and [MASK] are never candidates."""
        v = self.model.all_item_vectors()[1 : self.model.n_items + 1]
        return v if self.view is None else v[..., self.view]

    def states(self, hs: Tensor) -> Tensor:
        return hs if self.view is None else hs[..., self.view]


@dataclass
class LossContext:
    """What a loss may need besides states and ids: the spec, a generator, and item popularity for
    samplers."""

    spec: LossSpec
    generator: torch.Generator | None = None
    log_popularity: Tensor | None = None  # (n_items,) log Q(j) of the popularity proposal, row j-1 = item j

    def logit_adjustment(self) -> Tensor | None:
        """(n_items,) tau x log popularity, added to each item's training logit (``model.popularity_adjust``):
        the softmax then explains popularity by this fixed offset, and the scores served without it rank
        tail items higher (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment")."""
        tau = self.spec.popularity_adjust
        if not tau:
            return None
        if self.log_popularity is None:
            raise ValueError("popularity_adjust needs the training item counts (LossContext.log_popularity)")
        return tau * self.log_popularity


LossFn = Callable[[ItemScorer, Tensor, Tensor, Tensor, LossContext], Tensor]


def ranking_loss_from_states(model, hs: Tensor, pos: Tensor, neg: Tensor, ctx: LossContext) -> Tensor:
    """The configured loss on the fused scores, plus one per view when ``view_losses`` is on."""
    if hs.shape[0] == 0:  # nothing scored in this batch (every row a one-item sequence)
        return hs.sum() * 0.0
    fn: LossFn = LOSSES.get(ctx.spec.name)
    total = fn(ItemScorer(model), hs, pos, neg, ctx)
    views = getattr(model, "score_views", list)()
    if ctx.spec.view_losses and len(views) > 1:
        for view in views:
            total = total + fn(ItemScorer(model, view), hs, pos, neg, ctx)
    return total


def neighbour_smoothing_term(
    model, states: Tensor, items: Tensor, pos: Tensor, bias: Tensor | None, eps: float
) -> Tensor:
    """What moving a share eps of each target's mass to its K neighbours (``model.target_neighbours``: the
    items its text resembles) adds to a softmax cross-entropy over ``items`` (row j-1 = item j) with offsets
    ``bias``: the target distribution becomes (1 - eps) on the target and eps / K on each neighbour, and
    since log p_j = s_j - logsumexp, the loss changes by exactly eps x (s_pos - mean_k s_k) per row, with no
    second pass over the catalogue. Unlike ``label_smoothing``, which lifts every item alike, this pulls up
    the items like the target, so a rarely bought item's row is trained towards the users who bought its
    look-alikes."""
    lists = getattr(model, "target_neighbours", None)  # the SequentialRecommender hook; None by default
    neighbours = None if lists is None else lists(pos)
    if neighbours is None:
        raise ValueError(
            f"model.neighbour_smoothing: {type(model).__name__} lists no neighbours of its targets "
            "(target_neighbours); use model.name=llminit with model.text_neighbours > 0"
        )
    pulled = items[pos - 1] - items[neighbours - 1].mean(1)  # (m, D)
    shift = (states * pulled).sum(-1)
    if bias is not None:
        shift = shift + bias[pos - 1] - bias[neighbours - 1].mean(1)
    return eps * shift.mean()


# ---------------------------------------------------------------------------------------------- pairwise
def _logits_with_negatives(scorer: ItemScorer, hs: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """(m, 1 + k): the positive first; one item lookup for all ids. Each logit is the user state's dot product
    with the item vector: for LLM-ESR the fused score of Eq. (5), [e_co : e_se] . [u_co : u_se]."""
    ids = torch.cat([pos.unsqueeze(1), neg.reshape(len(pos), -1)], 1)
    return torch.einsum("md,mkd->mk", scorer.states(hs), scorer.vectors(ids))


@LOSSES.register("bce", per_position_negatives=True)
def bce_loss(scorer: ItemScorer, hs: Tensor, pos: Tensor, neg: Tensor, ctx: LossContext) -> Tensor:
    """L_Rank as the official code computes it (the paper writes the pairwise Eq. (6): ``bpr``)."""
    logits = _logits_with_negatives(scorer, hs, pos, neg)
    p, n = logits[:, 0], logits[:, 1:].reshape(-1)
    return F.binary_cross_entropy_with_logits(p, torch.ones_like(p)) + F.binary_cross_entropy_with_logits(
        n, torch.zeros_like(n)
    )


@LOSSES.register("bpr", per_position_negatives=True)
def bpr_loss(scorer: ItemScorer, hs: Tensor, pos: Tensor, neg: Tensor, ctx: LossContext) -> Tensor:
    """Eq. (6): L_Rank = -log sigmoid(s_pos - s_neg), averaged over scored positions and negatives."""
    logits = _logits_with_negatives(scorer, hs, pos, neg)
    return -F.logsigmoid(logits[:, :1] - logits[:, 1:]).mean()


def gbce_beta(negatives: int, n_items: int, t: float) -> float:
    """gSASRec's power on the positive probability: alpha = k / (N - 1), beta = alpha (t (1 - 1/alpha) +
    1/alpha)."""
    alpha = negatives / max(n_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


@LOSSES.register("gbce", per_position_negatives=True)
def gbce_loss(scorer: ItemScorer, hs: Tensor, pos: Tensor, neg: Tensor, ctx: LossContext) -> Tensor:
    """Mean over all 1 + k logits of each row of -beta log sigmoid(s_pos) and -log(1 - sigmoid(s_neg)).

    The positive term is computed in float64, as gSASRec does: sigmoid(s)^beta with beta near 0 is close to
    1."""
    logits = _logits_with_negatives(scorer, hs, pos, neg)
    k = logits.shape[1] - 1
    beta = gbce_beta(k, scorer.model.n_items, ctx.spec.gbce_t)
    positive = -beta * F.logsigmoid(logits[:, 0].double())
    negative = -F.logsigmoid(-logits[:, 1:])
    return (positive.sum().to(logits.dtype) + negative.sum()) / logits.numel()


# ---------------------------------------------------------------------------------------------- softmax
class _FusedSoftmaxCE(torch.autograd.Function):
    """Mean over rows of logsumexp_j (h_m . e_j + b_j) - (h_m . e_pos + b_pos) (label-smoothed: the target
    term is (1 - eps) s_pos + eps mean_j s_j), with both gradients computed in the forward pass, a block of
    rows at a time: each block's scores are made once, as an (items x rows) matrix, turned in place into
    exp(s - c) and used for the two gradient products while they are still in cache, so no pass holds more
    than (n_items, rows) scores and the backward only scales the stored gradients
    by the upstream one (the fused linear cross-entropy of large-vocabulary language models).

    Items run down the block so every product keeps the catalogue as its large, unpacked operand and the
    block's few rows as the small one (a CPU matmul library re-packs its second operand on every call). The
    softmax's 1/Z and the target's -1 never touch the block: they are applied to the small factors
    (h / Z, and -e_pos, -h subtracted after the products), which saves two passes over the scores."""

    @staticmethod
    def forward(
        ctx,
        hs: Tensor,
        items: Tensor,
        pos: Tensor,
        rows: int,
        bias: Tensor | None,
        low: bool,
        smoothing: float,
    ):
        want_hs, want_items = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        m = hs.shape[0]
        hs, pos = _pad_rows(hs, pos, rows)
        grad_hs = torch.empty_like(hs) if want_hs else None
        grad_items = torch.empty_like(items) if want_items else None  # the first block writes it whole
        inside_onednn = low and _cpu_bfloat16_matmul(hs.device)
        mm = _BlockProducts(copies=low and not inside_onednn)
        room = items.new_empty(items.shape[0] * min(rows, hs.shape[0]))  # every block's scores, in turn
        sums = _column_sums_by_product(items) if inside_onednn else _column_sums
        total = hs.new_zeros(())
        # label smoothing: the target is (1 - eps) onehot + eps / N, so the row's loss loses eps x its mean
        # score (h . mean_j e_j + mean_j b_j) and its gradients eps x that mean's
        keep = 1.0 - smoothing
        mean_item = items.mean(0) if smoothing else None
        mean_bias = bias.mean() if smoothing and bias is not None else 0.0
        with _cpu_bfloat16_products(inside_onednn):
            for start in range(0, hs.shape[0], rows):
                h, target = hs[start : start + rows], pos[start : start + rows]
                scores = room[: items.shape[0] * len(h)].view(items.shape[0], len(h))
                mm.into(scores, items, h.T, bias=bias)  # (n_items, rows)
                target_scores = scores[target, torch.arange(len(h), device=h.device)]
                refill = functools.partial(mm.into, scores, items, h.T, bias=bias)
                weights, z, shift = _softmax_numerators(scores, refill, sums)
                real = min(len(h), m - start)  # the rest are _pad_rows's zero rows: no loss, no gradient
                total += (shift + z.log() - keep * target_scores)[:real].sum()
                if smoothing:
                    total -= smoothing * ((h @ mean_item).sum() + real * mean_bias)
                if want_hs:  # (softmax - target)^T E = (weights^T E) / Z - (1 - eps) e_pos - eps mean(E)
                    block = grad_hs[start : start + rows]
                    mm.into(block, weights.T, items)
                    block.div_(z[:, None]).sub_(items[target], alpha=keep)
                    if smoothing:
                        block.sub_(mean_item, alpha=smoothing)
                if want_items:  # (softmax - target) h = weights (h / Z) - (1 - eps) onehot h - eps / N h
                    (mm.into if start == 0 else mm.add_to)(grad_items, weights, h / z[:, None])
                    grad_items.index_add_(0, target, h, alpha=-keep)
        if want_items and smoothing:
            grad_items.sub_(hs.sum(0), alpha=smoothing / items.shape[0])
        ctx.save_for_backward(None if grad_hs is None else grad_hs[:m], grad_items)
        ctx.m = m
        return total / m

    @staticmethod
    def backward(ctx, grad: Tensor):
        # scaled in place (a new catalogue-sized tensor would cost as much as the scaling); a second backward
        # through the same graph is therefore refused by autograd instead of scaling twice
        grad_hs, grad_items = ctx.saved_tensors
        scale = grad / ctx.m
        return (
            None if grad_hs is None else grad_hs.mul_(scale),
            None if grad_items is None else grad_items.mul_(scale),
            None,
            None,
            None,
            None,
            None,
        )


ROW_QUANTUM = 16  # CPU blocks hold a multiple of this many rows


def _pad_rows(hs: Tensor, pos: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """On a CPU, zero rows after the last, so that the last block's size is a multiple of ``ROW_QUANTUM``:
    oneDNN builds a kernel for every new product shape, which cost more than the product itself when each
    batch's last block had a size of its own (benchmarks/RESULTS.md, "block shapes"). A zero row adds nothing
    to the item gradient; the loss leaves those rows out."""
    extra = -hs.shape[0] % ROW_QUANTUM
    if hs.device.type != "cpu" or rows % ROW_QUANTUM or not extra:
        return hs, pos
    return F.pad(hs, (0, 0, 0, extra)), F.pad(pos, (0, extra))


UNSHIFTED_SUMS = (2.0**-60, 2.0**60)  # column sums of exp(s) that need no shift (no overflow, no denormals)


def _column_sums(block: Tensor) -> Tensor:
    """torch's sum down the block: float32 products (pinned to torch's loss by the tests) and GPUs."""
    return block.sum(0)


def _column_sums_by_product(items: Tensor) -> Callable[[Tensor], Tensor]:
    """Column sums of an (n_items, rows) block as a float32 product with a row of ones. With the other
    products in bfloat16 inside oneDNN, torch's reduction down the block's first dimension measured slower
    than this product, which stays float32 (no bfloat16 rounding of the sums; benchmarks/RESULTS.md, "reading
    the step costs")."""
    ones = items.new_ones(1, items.shape[0])

    def sums(block: Tensor) -> Tensor:
        with _cpu_matmul_precision("ieee"):
            return torch.mm(ones, block)[0]

    return sums


def _softmax_numerators(scores: Tensor, refill: Callable[[], None], sums: Callable[[Tensor], Tensor]):
    """Turn a block's scores (n_items, rows) into exp(s - c) in place; return them, their column sums z
    (``sums``) and the shift c, so that a row's loss is c + log z - s_pos.

    Any c gives the same softmax, and trained models' scores lie far inside float32's exponent range
    (benchmarks/RESULTS.md, "score range"), so the block is exponentiated as it is (c = 0): a shift costs a
    pass over the scores. Where a column's sum leaves [2^-60, 2^60] (a score beyond about +-40: the products
    could overflow, or the sum lose precision to denormals), the block is made again (``refill``) and shifted
    by its column maxima, so that z >= 1."""
    weights = scores.exp_()
    z = sums(weights)
    low, high = UNSHIFTED_SUMS
    if bool(((z >= low) & (z <= high)).all()):  # false for nan and inf as well
        return weights, z, 0.0
    refill()
    top = scores.amax(0)
    weights = scores.sub_(top).exp_()
    return weights, sums(weights), top


@dataclass(frozen=True)
class _BlockProducts:
    """The fused loss's products, written into memory it already holds: every fresh block-sized result is new
    memory to allocate and fill, and a separate ``+=`` one more pass over the whole item gradient per block
    (benchmarks/RESULTS.md). ``copies``: bfloat16 factors by copying (devices without oneDNN's bfloat16 math
    mode)."""

    copies: bool

    def into(self, out: Tensor, a: Tensor, b: Tensor, bias: Tensor | None = None) -> None:
        """out = a @ b (+ bias down the rows)."""
        if self.copies:
            out.copy_(_bfloat16_product(a, b))
            if bias is not None:
                out += bias[:, None]
        elif bias is None:
            torch.mm(a, b, out=out)
        else:
            torch.addmm(bias[:, None], a, b, out=out)

    def add_to(self, out: Tensor, a: Tensor, b: Tensor) -> None:
        """out += a @ b."""
        if self.copies:
            out += _bfloat16_product(a, b)
        else:
            out.addmm_(a, b)


def _bfloat16_product(a: Tensor, b: Tensor) -> Tensor:
    """a @ b with bfloat16 factors and a float32 result (devices without oneDNN's bfloat16 math mode)."""
    return (a.bfloat16() @ b.bfloat16()).float()


def _cpu_bfloat16_matmul(device: torch.device) -> bool:
    """Whether float32 products on ``device`` can run with bfloat16 factors inside oneDNN (PyTorch's
    ``torch.backends.mkldnn.matmul.fp32_precision``, CPU only): that avoids copying each factor to bfloat16,
    which on a CPU costs about as much as the bfloat16 product saves."""
    return device.type == "cpu" and hasattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision")


def _cpu_bfloat16_products(on: bool):
    """Float32 CPU products with bfloat16 factors and float32 accumulation while the block runs (oneDNN uses
    them on CPUs with bfloat16 instructions and plain float32 elsewhere); the setting is restored after.
    ``on`` only where ``_cpu_bfloat16_matmul`` says the setting exists."""
    return _cpu_matmul_precision("bf16") if on else contextlib.nullcontext()


@contextlib.contextmanager
def _cpu_matmul_precision(value: str):
    """oneDNN's precision for float32 CPU products (``"bf16"`` or ``"ieee"``) while the block runs, restored
    after."""
    settings = torch.backends.mkldnn.matmul
    before = settings.fp32_precision
    settings.fp32_precision = value
    try:
        yield
    finally:
        settings.fp32_precision = before


def fused_softmax_ce(
    hs: Tensor,
    items: Tensor,
    pos: Tensor,
    rows: int = 0,
    bias: Tensor | None = None,
    low: bool = False,
    smoothing: float = 0.0,
) -> Tensor:
    """Mean softmax cross-entropy of ``hs`` (m >= 1, D) against every row of ``items`` (N, D), the targets
    ``pos`` being 0-based rows of ``items``; ``bias`` (N,) is a constant added to every row's scores (no
    gradient); ``rows``: rows per block (0 = automatic); ``low``: the products in bfloat16
    (``model.ce_precision``); ``smoothing``: label smoothing as in ``F.cross_entropy`` (target mass
    ``smoothing / N`` on every item, ``model.label_smoothing``)."""
    rows = rows or _auto_rows(items.shape[0], hs.device)
    return _FusedSoftmaxCE.apply(hs, items, pos, rows, bias, low, float(smoothing))


CPU_BLOCK_ROWS = 128
CPU_WIDE_BLOCK = (256, 1 << 23)  # rows, and the most scores (32 MB) a block of that many may hold


def _auto_rows(n_items: int, device: torch.device, budget: int = 1 << 25) -> int:
    """On a CPU, 256 rows per block measured fastest while such a block stays within 8M scores (catalogues of
    up to 32,768 items), 128 beyond (benchmarks/RESULTS.md, "fused ce block size"); a GPU wants few, large
    blocks (each block is several kernel launches). Either way a block holds at most ``budget`` scores, or one
    row, so memory stays bounded for any catalogue."""
    most = max(1, budget // max(n_items, 1))
    if device.type != "cpu":
        return most
    wide, wide_budget = CPU_WIDE_BLOCK
    return wide if wide * n_items <= wide_budget else min(CPU_BLOCK_ROWS, most)


@LOSSES.register("ce")
def ce_loss(scorer: ItemScorer, hs: Tensor, pos: Tensor, neg: Tensor, ctx: LossContext) -> Tensor:
    """Full softmax: mean over rows of logsumexp_j s_j - s_pos, fused (``fused_softmax_ce``)."""
    spec = ctx.spec
    low, smoothing = spec.ce_precision == "bfloat16", spec.label_smoothing
    states, items, bias = scorer.states(hs), scorer.all_real(), ctx.logit_adjustment()
    loss = fused_softmax_ce(states, items, pos - 1, spec.chunk_rows, bias, low, smoothing)
    if spec.neighbour_smoothing:  # the item vectors and offsets the softmax just used, not built again
        loss = loss + neighbour_smoothing_term(
            scorer.model, states, items, pos, bias, spec.neighbour_smoothing
        )
    return loss


def _uniform(ctx: LossContext, n_items: int, pos: Tensor) -> tuple[Tensor, Tensor]:
    ids = torch.randint(1, n_items + 1, (ctx.spec.negatives,), device=pos.device, generator=ctx.generator)
    return ids, torch.full((len(ids),), -math.log(n_items), device=pos.device)


def _popularity(ctx: LossContext, n_items: int, pos: Tensor) -> tuple[Tensor, Tensor]:
    if ctx.log_popularity is None:
        raise ValueError("the popularity sampler needs the training item counts (LossContext.log_popularity)")
    ids = (
        torch.multinomial(
            ctx.log_popularity.exp(), ctx.spec.negatives, replacement=True, generator=ctx.generator
        )
        + 1
    )
    return ids, ctx.log_popularity[ids - 1]


def _in_batch(ctx: LossContext, n_items: int, pos: Tensor) -> tuple[Tensor, Tensor]:
    """The batch's distinct positives; they occur about in proportion to popularity, so that is their Q."""
    ids = torch.unique(pos)
    if ctx.log_popularity is None:
        return ids, torch.full((len(ids),), -math.log(n_items), device=pos.device)
    return ids, ctx.log_popularity[ids - 1]


# sampler name -> (shared negative ids (k,), log Q of each under the proposal)
SAMPLER_FUNCTIONS = {"uniform": _uniform, "popularity": _popularity, "in_batch": _in_batch}


def draw_shared_negatives(ctx: LossContext, n_items: int, pos: Tensor) -> tuple[Tensor, Tensor]:
    """(ids (k,), log(k Q(ids))) from the configured proposal (``model.loss_sampler``)."""
    sampler = SAMPLER_FUNCTIONS.get(ctx.spec.sampler)
    if sampler is None:
        raise ValueError(f"model.loss_sampler must be one of {SAMPLERS}, not {ctx.spec.sampler!r}")
    ids, log_q = sampler(ctx, n_items, pos)
    return ids, log_q + math.log(ids.numel())


def sampled_softmax_scores(
    scorer: ItemScorer, hs: Tensor, pos: Tensor, ids: Tensor, log_kq: Tensor
) -> Tensor:
    """(m, 1 + k) logits: the positive, then the shared negatives minus log(k Q), accidental hits at -inf."""
    states = scorer.states(hs)
    positive = (states * scorer.vectors(pos)).sum(-1, keepdim=True)
    negatives = states @ scorer.vectors(ids).T - log_kq
    negatives = negatives.masked_fill(pos[:, None] == ids[None, :], float("-inf"))
    return torch.cat([positive, negatives], 1)


@LOSSES.register("sampled_softmax")
def sampled_softmax_loss(
    scorer: ItemScorer, hs: Tensor, pos: Tensor, neg: Tensor, ctx: LossContext
) -> Tensor:
    ids, log_kq = draw_shared_negatives(ctx, scorer.model.n_items, pos)
    logits = sampled_softmax_scores(scorer, hs, pos, ids, log_kq)
    bias = ctx.logit_adjustment()
    if bias is not None:  # the same offset on the positive and on each shared negative
        logits = logits + torch.cat([bias[pos - 1][:, None], bias[ids - 1][None, :].expand(len(pos), -1)], 1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))
