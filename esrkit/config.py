"""Typed run configuration, loaded from a recipe TOML, with ``--set key=value`` overrides.

This is the one place a recipe is resolved: ``resolve_recipe("beauty-sasrec", ["model.alpha=0.5"])`` reads
``recipes/beauty-sasrec.toml`` (following ``extends = "..."`` chains), applies overrides in order, checks
every key against the dataclasses below and returns a ``RunConfig``. Unknown keys are errors, never silently
ignored. Then ``validate`` checks every value's range and every name against what exists (the ``RULES``
table), so a bad option fails before any data is read or any run folder exists. Defaults reproduce the
official LLM-ESR scripts (see docs/FIDELITY.md for every choice).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any

from esrkit.registry import ENCODERS, LOSSES, MODELS, Registry
from esrkit.resources import find_resource, list_resources, load_toml
from esrkit.utils.errors import choices, did_you_mean, error_text, quote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    """Which interactions to use and how to group them."""

    path: str = ""  # a processed dataset directory (from `esrkit data prepare`); wins over `source`
    source: str = (
        ""  # otherwise prepare on the fly: "synthetic" or a reader name (see `esrkit data prepare --help`)
    )
    inputs: dict[str, str] = field(
        default_factory=dict
    )  # reader inputs, e.g. {reviews = "...", meta = "..."}
    prepare: dict[str, Any] = field(default_factory=dict)  # preprocessing options (thresholds, k-core, ...)
    synthetic: dict[str, Any] = field(default_factory=dict)  # options of the synthetic catalogue generator
    name: str = ""
    ts_user: int = 9  # official tail-user threshold: tail if test input length < ts_user
    ts_item: int = 4  # official tail-item threshold: tail if target popularity (distinct users) < ts_item
    group_rule: str = "official"  # or "pareto" (the paper's top-20% rule)
    max_len: int = 200
    # the cold-item protocol (docs/SERVING.md): hold this fraction of the items out of training entirely, add
    # them afterwards from their text with the model's new-item contract, report a "cold_item" test group
    # (0 = off)
    cold_items: float = 0.0
    cold_mode: str = "random"  # random (seeded by cold_seed) | newest (by first timestamp, else by position)
    cold_seed: int = 0


@dataclass
class EmbeddingConfig:
    """Where the LLM item/user embeddings come from."""

    provider: str = "offline"  # a providers/*.toml name; "none" for ID-only models
    templates: str = "generic"  # a recipes/prompts/*.toml name
    options: dict[str, Any] = field(default_factory=dict)  # provider overrides (model path, dimensions, ...)
    user_provider: str = (
        ""  # provider for the user prompts (similar-user retrieval); "" = the same as `provider`
    )
    item_embeddings: str = ""  # explicit (n_items, d) .npy, row i-1 = item i; bypasses the provider for items
    user_embeddings: str = ""  # explicit (n_users, d) .npy, row = user row; bypasses the provider for users
    pca_dim: int = 0  # collaborative-table size for PCA init; 0 = the model's hidden size
    pca_table: str = ""  # explicit (n_items, hidden) .npy PCA table (official pca64_itm_emb_np)
    # subtract the mean item vector before use: removes the direction every item shares, which dominates
    # anisotropic tables such as mean-pooled decoder states (docs/RESULTS.md, section 3). The official code
    # uses raw vectors.
    center_items: bool = False


@dataclass
class RetrievalConfig:
    """Similar users for retrieval-augmented self-distillation."""

    n_similar: int = 10  # N
    top_k: int = 100  # neighbours stored per user (the official table keeps 100)
    method: str = "auto"  # auto | exact | hnsw
    neighbours: str = ""  # explicit (n_users, >=N) int .npy of 0-based user rows (official sim_user_100)
    exact_below: int = 200_000  # "auto" uses exact search below this many users
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 200


@dataclass
class ModelConfig:
    """Model family, backbone and every LLM-ESR ablation switch."""

    name: str = "llmesr"  # llmesr | id (plain backbone) | llminit | (baselines: cities, melt, rlmrec)
    backbone: str = "sasrec"  # sasrec | bert4rec | gru4rec | any registered encoder
    hidden: int = 64  # per view for LLM-ESR (official 64); the paper's single-view baselines use 128
    layers: int = 0  # 0 = the backbone's official default (2 self-attention layers, 1 GRU layer)
    heads: int = 1
    dropout: float = 0.5
    causal: bool = False  # the official SASRec is bidirectional (author-confirmed); True = textbook SASRec,
    # and LLM-ESR's cross-attention causal too (any backbone)
    mask_prob: float = 0.6  # BERT4Rec cloze probability (official scripts)
    # what the backbone trains to predict: "" = its own (SASRec: the next item at every position, BERT4Rec:
    # masked items, GRU4Rec: the item after the sequence only, as the official code); seq2seq = the next
    # item at every position (GRU4Rec as Hidasi et al. train it: every position of a sequence is an example)
    objective: str = ""
    emulate_padding: bool = True  # attend to max_len-padding exactly as the official fixed-length code does
    # LLM-ESR switches (Table 2 / Table 6 ablations)
    co_view: bool = True
    se_view: bool = True
    share_encoder: bool = True
    cross_attention: bool = True
    cross_heads: int = 2  # hard-coded in the official code
    adapter_layers: int = 2  # 2 = Linear(d_llm, d_llm/2) -> Linear(d_llm/2, d); 1 = Linear(d_llm, d)
    id_init: str = "pca"  # pca | random
    freeze_semantic: bool = True
    alpha: float = 0.1  # self-distillation weight
    sd_loss: str = "mse_mean"  # mse_mean (official nn.MSELoss) | paper (Eq. 9: squared L2 per user, averaged)
    # esrkit's full-ranking switches (docs/RESULTS.md "Best under full ranking"); the defaults are the
    # official model
    semantic_residual: bool = (
        False  # LLM-ESR: trainable per-item offset on the frozen semantic view (starts at 0)
    )
    view_norm: bool = False  # LLM-ESR: L2-normalise each view, learned inverse temperature per view
    gate: str = "none"  # LLM-ESR: none | popularity (per item, from training popularity) | user
    score_norm: bool = False  # id / llminit / alphafuse: cosine scores with a learned inverse temperature
    temperature: float = 0.1  # starting temperature of score_norm and view_norm (learned from there)
    anchor: float = 0.0  # LLMInit: weight of the squared distance of item vectors from their PCA start
    text_neighbours: int = 0  # LLMInit: K > 0 mixes each item's vector with its K nearest items' by text
    # LLMInit: a new item's row (add_items) is its PCA projection as is (projection) or rescaled to the mean
    # length of the trained rows (trained), so items added after training are not scored low for being short
    new_item_norm: str = "projection"
    # LLMInit: the PCA start at its own scale (pca) or rescaled to the scale of the backbone's own
    # initialisation (backbone: xavier-normal's for the item table), directions kept, so text that carries no
    # signal starts the model exactly as the ID backbone starts, a random table at the usual scale
    init_norm: str = "pca"
    # LLMInit: each item keeps w_i = 2 sigmoid(a + b z_i) of its text start (z_i its standardised log training
    # popularity; a, b learned from 0, so training starts at LLMInit), so text that does not help can be taken
    # out of tail items too (esrkit/models/text_start.py)
    start_gate: bool = False
    # LLMInit with text_neighbours: when ranking (final evaluation and serving; not training, not epoch
    # selection), the text neighbours of the user's last item get this bonus on their scores (0 = off)
    neighbour_boost: float = 0.0
    neighbour_boost_items: int = 1  # ... to the neighbours of the last M input items (summed where they meet)
    # ... neighbour j gets neighbour_boost x 2 sigmoid(-s z_j), z_j its standardised log training popularity:
    # s > 0 gives rare neighbours more (up to 2x) and popular ones less; 0 = the same for every neighbour
    neighbour_boost_tail: float = 0.0
    # LLMInit with text_neighbours: when ranking (as neighbour_boost), every item gets this times the cosine
    # of its LLM vector with the sum of the user's last M items' (the bonus's signal over the whole catalogue;
    # 0 = off) ...
    text_boost: float = 0.0
    text_boost_items: int = 1  # ... M
    # ... item i's share is multiplied by 1 + s max(0, -z_i): items rarer than average get more, popular the
    # plain cosine (z_i as for neighbour_boost_tail)
    text_boost_tail: float = 0.0
    # LLMInit with text_neighbours: when ranking (as neighbour_boost), every item i gets
    # alpha (h_u - c) z_i: h_u the mean z of the user's last M items, c that of the average training
    # interaction, z as for neighbour_boost_tail. A user whose recent items are rarer than usual has popular
    # items lowered and rare ones raised, a mainstream user the reverse (0 = off) ...
    popularity_tilt: float = 0.0
    popularity_tilt_items: int = 1  # ... M
    # LLMInit with text_neighbours: in training, each item's vector is its text neighbours' mean alone with
    # this probability (per occurrence, inputs and candidates), as DropoutNet drops a cold item's preference
    # input, so that the mean a tail item leans on is trained to stand in for an ID vector (0 = off)
    neighbour_dropout: float = 0.0
    semantic_adapter: bool = False  # LLMInit: + a trainable linear map of the frozen LLM vector (starts at 0)
    # AlphaFuse (model.name = "alphafuse"): ID embeddings in the null space of the LLM item embeddings
    null_dim: int = 64  # width of the null space (the last kept coordinates)
    null_threshold: float = 0.0  # > 0: the null space is every kept direction with variance <= this instead
    whiten: bool = (
        True  # divide the semantic coordinates by their standard deviation (the public code's default)
    )
    cover: bool = False  # True: ID embeddings replace the null-space coordinates instead of adding to them
    table_scale: float = 0.0  # whitened table scale: 0 = the unwhitened projection's total variance, 1 = unit
    teacher_refresh: str = (
        "step"  # step (official: teachers recomputed every step) | epoch (cached per epoch)
    )
    # ranking loss (esrkit/training/losses.py): bce (official, train.negatives per position) | bpr (the
    # paper's pairwise Eq. 6) | gbce (gSASRec) | ce (softmax over every item) | sampled_softmax
    # (train.negatives shared)
    loss: str = "bce"
    loss_sampler: str = (
        "uniform"  # sampled_softmax proposal: uniform | popularity | in_batch (logQ-corrected)
    )
    gbce_t: float = 0.75  # gbce calibration: 0 = plain BCE over the same negatives, 1 = fully calibrated
    view_losses: bool = False  # LLM-ESR: also one loss per view's own logits, beside the fused logits
    # ce / sampled_softmax: train with tau x log(training popularity) added to every item's logit and score
    # without it, so the learned scores need not encode popularity (logit adjustment; 0 = off)
    popularity_adjust: float = 0.0
    ce_precision: str = "float32"  # ce: float32 | bfloat16 (catalogue products in bfloat16: faster on CPU)
    # ce: this share of every target's mass spread evenly over all items (torch's label_smoothing; 0 = off)
    label_smoothing: float = 0.0
    # ce, LLMInit with text_neighbours: this share of every target's mass moved to its K text neighbours
    # (evenly), so tail items that resemble bought ones are trained towards those users too (0 = off)
    neighbour_smoothing: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # options of custom encoders and baselines


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    patience: int = 20
    watch: str = "ndcg@10"  # validation metric for model selection (paper protocol)
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    negatives: int = 1  # training negatives per positive
    max_batches_per_epoch: int = 0  # 0 = all (a knob for smoke tests and benchmarks)
    buckets: int = 0  # length buckets per batch (exact); 0 = automatic (4 on CPU, 2 on GPU)
    ema: float = 0.0  # decay of the weights' moving average that validation and the saved model use; 0 = off
    item_lr: float = 0.0  # learning rate of the model's item tables (its item_tables()); 0 = train.lr


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["sampled", "full"])
    negatives: int = 100  # sampled protocol: target + 100 uniform negatives
    validation_negatives: str = "fixed"  # fixed (per seed) | resample (official: re-drawn every epoch)
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    ties: str = "pessimistic"  # pessimistic | optimistic | random
    exclude_history: bool = True  # full ranking: never rank items already in the input history
    batch_size: int = 1024
    valid_protocol: str = "sampled"  # protocol that selects the model (official: sampled)


@dataclass
class RunConfig:
    name: str = "run"
    description: str = ""
    output_dir: str = "runs"
    workdir: str = ".esrkit"  # prepared datasets, embedding cache, indexes
    data: DataConfig = field(default_factory=DataConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def copy(self) -> RunConfig:
        return copy.deepcopy(self)


# ---------------------------------------------------------------------------------------------- building
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true/false, got {quote(value)}")


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{where}: expected an integer, got {quote(value)}")


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {quote(value)}")
    return float(value)


def _as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {quote(value)}")
    return value


# a field's scalar type -> its converter (TOML booleans are not numbers here, nor numbers booleans)
_SCALARS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _as_list(value: Any, hint: Any, where: str) -> list:
    (inner,) = typing.get_args(hint) or (Any,)
    if isinstance(value, str):  # "5,10,20" from the command line
        value = [_parse_scalar(v.strip()) for v in value.split(",") if v.strip()]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {quote(value)}")
    return [_coerce(v, inner, f"{where}[{i}]") if inner is not Any else v for i, v in enumerate(value)]


def _as_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {quote(value)}")
    return dict(value)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` names (a scalar, ``X | None``, a list, a table or a nested dataclass),
    or a ConfigError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # ``float | None``: None, or a value of the other type
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        return _coerce(value, args[0], where) if len(args) == 1 else value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return build_dataclass(hint, value, where)
    if hint in _SCALARS:
        return _SCALARS[hint](value, where)
    if origin is list:
        return _as_list(value, hint, where)
    if origin is dict:
        return _as_dict(value, where)
    return value


def build_dataclass(cls: type, values: dict[str, Any], where: str = "", what: str = "key") -> Any:
    """``cls(**values)`` with every value checked and coerced to its field's type (ConfigError otherwise): the
    one path from a table (a recipe section, a baseline's ``model.extra`` options) to a typed dataclass."""
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown {what}(s) {sorted(unknown)}{did_you_mean(unknown, names)}; "
            f"allowed: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in values.items()}
    return cls(**kwargs)


def _parse_scalar(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``model.alpha=0.5`` -> (["model", "alpha"], 0.5). Values use TOML syntax; bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override {quote(text)} must look like key=value (e.g. model.alpha=0.5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {quote(text)} has an empty key")
    return key.split("."), _parse_scalar(raw.strip())


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a table")
    node[path[-1]] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("inputs", "options", "extra"):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_recipe_tree(name_or_path: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    path = find_resource("recipe", name_or_path)
    if str(path) in _seen:
        raise ConfigError(f"recipe 'extends' cycle: {' -> '.join(_seen + (str(path),))}")
    tree = load_toml(path)
    parent = tree.pop("extends", None)
    own_name = tree.get("name") or path.stem  # a recipe is named after its own file, not its parent's
    if parent:
        base, _ = load_recipe_tree(parent, _seen + (str(path),))
        tree = _deep_merge(base, tree)
    tree["name"] = own_name
    return tree, path


def resolve_recipe(
    name_or_path: str | None, overrides: list[str] | tuple[str, ...] = (), top: dict[str, Any] | None = None
) -> RunConfig:
    """The recipe, then ``overrides`` (``key=value``, TOML values), then ``top`` (top-level keys taken as they
    are, e.g. ``--name``), checked and validated."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if name_or_path:
        tree, path = load_recipe_tree(name_or_path)
        source = str(path)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    tree.update({k: v for k, v in (top or {}).items() if v is not None})
    try:
        return validate(build_dataclass(RunConfig, tree, ""))
    except ConfigError as exc:
        raise ConfigError(f"{source}{' with --set overrides' if overrides else ''}: {exc}") from None


def config_from_dict(tree: dict[str, Any]) -> RunConfig:
    return validate(build_dataclass(RunConfig, tree, ""))


# ---------------------------------------------------------------------------------------------- validation
# A rule returns None for a good value, else what is allowed ("must be ..."); it sees the whole config for
# rules that depend on another option. RULES maps "section.key" to its rule; a key without one is only
# type-checked.
Rule = Callable[[Any, RunConfig], "str | None"]

LOSS_SAMPLERS = ("uniform", "popularity", "in_batch")  # esrkit/training/losses.py draws them
GATES = ("none", "popularity", "user")  # esrkit/models/fusion.py
NEW_ITEM_NORMS = ("projection", "trained")  # esrkit/models/idrec.py (LLMInit.add_items)
INIT_NORMS = ("pca", "backbone")  # esrkit/models/idrec.py (LLMInit's start)
OBJECTIVE_OVERRIDES = ("seq2seq", "last")  # esrkit/models/__init__.py (build_model)
PROTOCOL_NAMES = ("sampled", "full")
WATCH_METRICS = ("hr", "ndcg")  # what the evaluator computes at every k of eval.ks
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def at_least(low: float) -> Rule:
    return lambda v, cfg: None if v >= low else f"must be at least {low}"


def above(low: float) -> Rule:
    return lambda v, cfg: None if v > low else f"must be greater than {low}"


def between(low: float, high: float, high_open: bool = False) -> Rule:
    def rule(v: Any, cfg: RunConfig) -> str | None:
        inside = low <= v < high if high_open else low <= v <= high
        return None if inside else f"must be in [{low}, {high}{')' if high_open else ']'}"

    return rule


def one_of(*names: Any) -> Rule:
    return lambda v, cfg: None if v in names else f"must be one of {', '.join(map(str, names))}"


def each(rule: Rule, nonempty: bool = True) -> Rule:
    def check(values: list[Any], cfg: RunConfig) -> str | None:
        if nonempty and not values:
            return "must not be empty"
        problems = [f"{quote(v)} {p}" for v in values if (p := rule(v, cfg))]
        return "; ".join(problems) or None

    return check


def registered(registry: Registry) -> Rule:
    """A name in a registry (built-in, registered by the user's own code, or a ``package.module:Class``
    plug-in that imports)."""

    def rule(v: str, cfg: RunConfig) -> str | None:
        if v in registry:
            return None
        if registry.plugins and ":" in v:
            try:
                registry.get(v)
            except KeyError as exc:
                return error_text(exc)
        return f"is not a registered {registry.kind}{choices(v, registry.names())}"

    return rule


def resource(kind: str, *also: str) -> Rule:
    """The name of a definition (providers/*.toml, recipes/prompts/*.toml) that exists, or one of ``also``."""

    def rule(v: str, cfg: RunConfig) -> str | None:
        if v in also:
            return None
        try:
            find_resource(kind, v)
        except FileNotFoundError:
            return f"is not a {kind} definition{choices(v, [*also, *list_resources(kind)])}"
        return None

    return rule


def watch_metric(v: str, cfg: RunConfig) -> str | None:
    name, _, k = v.lower().partition("@")
    if name in WATCH_METRICS and k.isdigit() and int(k) in cfg.eval.ks:
        return None
    choices = ", ".join(f"{m}@{k}" for m in WATCH_METRICS for k in cfg.eval.ks)
    return f"must be a validation metric the evaluator computes (eval.ks = {cfg.eval.ks}): {choices}"


def run_name(v: str, cfg: RunConfig) -> str | None:
    """A run name is a folder under output_dir: an absolute path or a '..' would write outside it."""
    return name_problem(v)


def name_problem(name: str) -> str | None:
    path = PurePath(name)
    if not name.strip() or name.strip() == "." or path.is_absolute() or ".." in path.parts or "\\" in name:
        return (
            "must be a relative folder name that stays inside the output folder (--name, --output-dir): "
            "no '..', not absolute"
        )
    return None


def device_name(v: str, cfg: RunConfig) -> str | None:
    return None if DEVICE_PATTERN.fullmatch(v) else "must be auto, cpu, cuda, cuda:N, mps, xpu or xpu:N"


def divides_hidden(attr: str) -> Rule:
    def rule(v: int, cfg: RunConfig) -> str | None:
        heads = getattr(cfg.model, attr)
        unused = attr == "cross_heads" and not (cfg.model.name == "llmesr" and cfg.model.cross_attention)
        ok = heads < 1 or unused or v % heads == 0
        return None if ok else f"must be divisible by model.{attr} = {heads}"

    return rule


def llminit_only(default: Any) -> Rule:
    """An LLMInit option: another family would ignore it silently."""

    def rule(v: Any, cfg: RunConfig) -> str | None:
        if v == default or cfg.model.name == "llminit":
            return None
        return f"applies to model.name = llminit only (it is {cfg.model.name})"

    return rule


def losses_only(*losses: str) -> Rule:
    """An option of some losses only (0 = off): logit adjustment shifts a softmax over items, which a pairwise
    or binary loss does not have; label smoothing spreads target mass over every item, which only the full
    softmax scores."""

    def rule(v: float, cfg: RunConfig) -> str | None:
        ok = v == 0 or cfg.model.loss in losses
        return None if ok else f"needs model.loss = {' or '.join(losses)} (it is {cfg.model.loss})"

    return rule


def objective_fits_backbone(v: str, cfg: RunConfig) -> str | None:
    """Next-item training at every position needs an encoder whose output at a position has not seen the
    items after it; a cloze encoder attends both ways, so every position would see its own target."""
    if v != "seq2seq" or cfg.model.backbone not in ENCODERS:
        return None
    own = ENCODERS.meta(cfg.model.backbone)["objective"]
    if own != "cloze":
        return None
    return (
        f"backbone {cfg.model.backbone} attends both ways (its own objective is {own}): at every position "
        "it would see the item it is to predict; leave model.objective empty or use last"
    )


def needs_text_neighbours(v: float, cfg: RunConfig) -> str | None:
    """The bonus, the text term and the neighbour dropout act on the items' text neighbours (the text term on
    the unit LLM vectors they are found with): without them they would do nothing."""
    ok = v == 0 or cfg.model.text_neighbours > 0
    return None if ok else "needs model.text_neighbours > 0 (it acts on the items' text neighbours)"


def smoothing_leaves_the_target(v: float, cfg: RunConfig) -> str | None:
    """The two smoothings take their shares from the same target: together they must leave it some."""
    total = v + cfg.model.label_smoothing
    if v == 0 or total < 1:
        return None
    return f"plus model.label_smoothing is {total:g}; the two must sum to less than 1"


# model options that only change how a trained model ranks (evaluation and serving), never training: they can
# be chosen on validation after training (load_run(ranking=...), `esrkit evaluate/export --neighbour-boost`)
RANKING_OPTIONS = (
    "neighbour_boost",
    "neighbour_boost_items",
    "neighbour_boost_tail",
    "text_boost",
    "text_boost_items",
    "text_boost_tail",
    "popularity_tilt",
    "popularity_tilt_items",
)


def all_of(*rules: Rule) -> Rule:
    return lambda v, cfg: next((p for r in rules if (p := r(v, cfg))), None)


RULES: dict[str, Rule] = {
    "name": run_name,
    "data.ts_user": at_least(0),
    "data.ts_item": at_least(0),
    "data.group_rule": one_of("official", "pareto"),
    "data.max_len": at_least(1),
    "embedding.provider": resource("provider", "none"),
    "embedding.templates": resource("prompt"),
    "embedding.user_provider": resource("provider", "", "none"),
    "embedding.pca_dim": at_least(0),
    "retrieval.n_similar": at_least(1),
    "retrieval.top_k": at_least(1),
    "retrieval.method": one_of("auto", "exact", "hnsw"),
    "retrieval.exact_below": at_least(0),
    "retrieval.hnsw_m": at_least(2),
    "retrieval.hnsw_ef_construction": at_least(1),
    "retrieval.hnsw_ef": at_least(1),
    "model.name": registered(MODELS),
    "model.backbone": registered(ENCODERS),
    "model.hidden": all_of(at_least(1), divides_hidden("heads"), divides_hidden("cross_heads")),
    "model.layers": at_least(0),
    "model.heads": at_least(1),
    "model.dropout": between(0.0, 1.0, high_open=True),
    "model.mask_prob": all_of(above(0.0), between(0.0, 1.0)),
    "model.objective": all_of(one_of("", *OBJECTIVE_OVERRIDES), objective_fits_backbone),
    "model.cross_heads": at_least(1),
    "model.adapter_layers": one_of(1, 2),
    "model.id_init": one_of("pca", "random"),
    "model.alpha": at_least(0.0),
    "model.sd_loss": one_of("mse_mean", "paper"),
    "model.teacher_refresh": one_of("step", "epoch"),
    "model.loss": registered(LOSSES),
    "model.loss_sampler": one_of(*LOSS_SAMPLERS),
    "model.gbce_t": between(0.0, 1.0),
    "model.popularity_adjust": all_of(at_least(0.0), losses_only("ce", "sampled_softmax")),
    "model.ce_precision": one_of("float32", "bfloat16"),
    "model.label_smoothing": all_of(between(0.0, 1.0, high_open=True), losses_only("ce")),
    "model.neighbour_smoothing": all_of(
        between(0.0, 1.0, high_open=True),
        losses_only("ce"),
        llminit_only(ModelConfig.neighbour_smoothing),
        needs_text_neighbours,
        smoothing_leaves_the_target,
    ),
    "model.gate": one_of(*GATES),
    "model.null_dim": at_least(1),
    "model.null_threshold": at_least(0.0),
    "model.table_scale": at_least(0.0),
    "model.temperature": above(0.0),
    "model.anchor": at_least(0.0),
    "model.text_neighbours": at_least(0),
    "model.new_item_norm": all_of(one_of(*NEW_ITEM_NORMS), llminit_only(ModelConfig.new_item_norm)),
    "model.init_norm": all_of(one_of(*INIT_NORMS), llminit_only(ModelConfig.init_norm)),
    "model.start_gate": llminit_only(ModelConfig.start_gate),
    "model.neighbour_boost": all_of(
        at_least(0.0), llminit_only(ModelConfig.neighbour_boost), needs_text_neighbours
    ),
    # refinements of the bonus: like gbce_t without gbce, inert while model.neighbour_boost is 0, so that one
    # option turns a recipe's bonus off
    "model.neighbour_boost_items": all_of(at_least(1), llminit_only(ModelConfig.neighbour_boost_items)),
    "model.neighbour_boost_tail": all_of(at_least(0.0), llminit_only(ModelConfig.neighbour_boost_tail)),
    "model.text_boost": all_of(at_least(0.0), llminit_only(ModelConfig.text_boost), needs_text_neighbours),
    "model.text_boost_items": all_of(at_least(1), llminit_only(ModelConfig.text_boost_items)),
    "model.text_boost_tail": all_of(at_least(0.0), llminit_only(ModelConfig.text_boost_tail)),
    "model.popularity_tilt": all_of(
        at_least(0.0), llminit_only(ModelConfig.popularity_tilt), needs_text_neighbours
    ),
    "model.popularity_tilt_items": all_of(at_least(1), llminit_only(ModelConfig.popularity_tilt_items)),
    "model.neighbour_dropout": all_of(
        between(0.0, 1.0, high_open=True), llminit_only(ModelConfig.neighbour_dropout), needs_text_neighbours
    ),
    "train.lr": above(0.0),
    "train.weight_decay": at_least(0.0),
    "train.batch_size": at_least(1),
    "train.epochs": at_least(1),
    "train.patience": at_least(1),
    "train.watch": watch_metric,
    "train.seed": between(0, 2**32 - 1),
    "train.device": device_name,
    "train.negatives": at_least(1),
    "train.max_batches_per_epoch": at_least(0),
    "train.buckets": at_least(0),
    "train.ema": between(0.0, 1.0, high_open=True),
    "train.item_lr": at_least(0.0),
    "eval.protocols": each(one_of(*PROTOCOL_NAMES)),
    "eval.negatives": at_least(1),
    "eval.validation_negatives": one_of("fixed", "resample"),
    "eval.ks": each(at_least(1)),
    "eval.ties": one_of("pessimistic", "optimistic", "random"),
    "eval.batch_size": at_least(1),
    "eval.valid_protocol": one_of(*PROTOCOL_NAMES),
}


def validate(cfg: RunConfig) -> RunConfig:
    """Every RULES entry checked at once, so one error lists every bad option (ConfigError)."""
    problems = []
    for key, rule in RULES.items():
        value = _get_path(cfg, key)
        problem = rule(value, cfg)
        if problem:
            problems.append(f"{key} = {quote(value)}: {problem}")
    if problems:
        raise ConfigError(
            "invalid option(s); fix them in the recipe or with --set KEY=VALUE:\n  " + "\n  ".join(problems)
        )
    return cfg


def _get_path(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node
