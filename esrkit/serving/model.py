"""A trained model as a recommender: raw item-id histories in, top-k items out, new items from text.

``ServedModel`` wraps any model family behind its contract (esrkit/models/recommender.py): a history becomes
the same right-aligned input the evaluator builds (``history_input``), the user vector is the model's own
``last_hidden`` and the scores are its dot products with ``all_item_vectors()``, so a served score equals the
model's forward pass on that sequence. No dataset, cache or LLM is needed to recommend; ``add_items`` calls
the provider the model was trained with, and only for the new items' text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from esrkit.config import NEW_ITEM_NORMS, RunConfig
from esrkit.data.batches import history_input
from esrkit.embedding.pca import projection_from_table
from esrkit.models import ModelAssets, SequentialRecommender
from esrkit.models.recommender import NewItemsUnsupported, add_ranking_bonus, recent_items
from esrkit.prompts.templates import PromptTemplates, load_templates, render_item
from esrkit.providers import Provider, build_provider, load_provider
from esrkit.serving.folder import write_export
from esrkit.utils.io import read_json

log = logging.getLogger(__name__)

ID_FIELDS = ("id", "item_id", "asin", "business_id")  # where a new item record's id may be
SCORE_BUDGET = 1 << 24  # scores held at once when ranking many users (64 MiB of float32)
TOKEN_BUDGET = 16_384  # padded history tokens encoded at once


class Recommendation(NamedTuple):
    item: str
    score: float
    title: str


class UnknownItemsError(KeyError):
    """Raw item ids that are not in the model's catalogue."""

    def __init__(self, ids: list[str], where: str = "history") -> None:
        self.ids = ids
        shown = ", ".join(repr(i) for i in ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        super().__init__(
            f"unknown item id(s) in the {where}: {shown} (not in the model's catalogue; "
            "add new items with add_items first)"
        )

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class UserHistories:
    """The users a model was trained on and their whole sequences (internal item ids), for ``--all-users``."""

    user_ids: list[str]
    offsets: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # int64
    _rows: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.user_ids)

    def history(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row] : self.offsets[row + 1]]

    def row_of(self, user_id: str) -> int:
        if self._rows is None:
            self._rows = {u: r for r, u in enumerate(self.user_ids)}
        if user_id not in self._rows:
            raise KeyError(f"unknown user id {user_id!r} (ids look like {self.user_ids[0]!r})")
        return self._rows[user_id]

    @classmethod
    def from_data(cls, data: Any) -> UserHistories:
        return cls(
            list(map(str, data.user_ids)),
            np.asarray(data.offsets, dtype=np.int64),
            np.asarray(data.items, dtype=np.int64),
        )


@dataclass
class TopK:
    """Top-k of a block of users: ``items`` (b, k) internal ids, ``scores`` (b, k), ``valid`` (b, k) False
    where fewer than k real, non-excluded items were left (those slots hold nothing)."""

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    valid: np.ndarray


class ServedModel:
    """A trained model with its item catalogue; see the module docstring. Build with ``esrkit.load(DIR)`` or
    ``ServedModel.from_run``."""

    def __init__(
        self,
        model: SequentialRecommender,
        cfg: RunConfig,
        item_ids: list[str],
        titles: list[str],
        *,
        assets: ModelAssets | None = None,
        llm_center: np.ndarray | None = None,
        llm_dim: int | None = None,
        provider: dict[str, Any] | None = None,
        templates: PromptTemplates | None = None,
        users: UserHistories | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if len(item_ids) != model.n_items or len(titles) != model.n_items:
            raise ValueError(
                f"{len(item_ids)} item ids and {len(titles)} titles for a model of {model.n_items} items"
            )
        self.model = model.eval()
        self.cfg = cfg
        self.item_ids = [str(i) for i in item_ids]
        self.titles = list(titles)
        self.assets = assets or ModelAssets()
        self.llm_center = llm_center
        self.llm_dim = llm_dim
        self.provider_spec = provider
        self.templates = templates
        self.users = users
        self.info = dict(info or {})
        self._index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise ValueError("duplicate item ids in the catalogue")
        self._vectors: Tensor | None = None
        self._provider: Provider | None = None

    # ------------------------------------------------------------------ basics
    @property
    def n_items(self) -> int:
        return self.model.n_items

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def new_item_support(self) -> str:
        return type(self.model).new_item_support(self.cfg.model)

    def item_index(self, ids: Iterable[str], where: str = "history") -> np.ndarray:
        """Internal ids (1..n_items) of raw item ids; every unknown id is named in one error."""
        ids = [str(i) for i in ids]
        unknown = [i for i in dict.fromkeys(ids) if i not in self._index]
        if unknown:
            raise UnknownItemsError(unknown, where)
        return np.fromiter((self._index[i] for i in ids), dtype=np.int64, count=len(ids))

    @torch.no_grad()
    def _extend_item_vectors(self, old_n_items: int) -> None:
        """Only the added items' vectors are computed: the contract leaves every existing item as it was, so
        their cached vectors stay bit for bit what they were (and adding items costs their own rows only)."""
        if self._vectors is None:
            return
        new = torch.arange(old_n_items + 1, self.n_items + 1, device=self.device)
        self._vectors = torch.cat([self._vectors[: old_n_items + 1], self.model.item_vectors(new).detach()])

    @torch.no_grad()
    def item_vectors(self) -> Tensor:
        """(n_items + 1, D): what every item is scored with (row 0 = padding), computed once."""
        if self._vectors is None:
            self._vectors = self.model.all_item_vectors().detach()
        return self._vectors

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def user_vectors(self, histories: Sequence[np.ndarray]) -> Tensor:
        """(B, D) prediction representations of internal-id histories (the model's ``last_hidden``)."""
        for h in histories:
            if len(h) == 0:
                raise ValueError(
                    "an empty history gives the model nothing to condition on; pass at least one item"
                )
        m = self.model
        inp = history_input(list(histories), self.cfg.data.max_len, m.objective, m.mask_token, self.device)
        return m.last_hidden(inp)

    @torch.no_grad()
    def scores(self, history: Sequence[str]) -> np.ndarray:
        """(n_items + 1,) scores of every item after ``history`` as the model ranks them (its ranking bonus
        included; index = internal id; 0 is padding)."""
        tokens = self.item_index(history)
        scores = self.user_vectors([tokens]) @ self.item_vectors().T
        return self._with_bonus(scores, [tokens])[0].float().cpu().numpy()

    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray], k: int, excluded: Sequence[np.ndarray]) -> TopK:
        """Top-k internal ids after internal-id histories; ``excluded[i]`` is never recommended to user i."""
        return self._rank(self.user_vectors(histories), k, excluded, histories)

    def _with_bonus(self, scores: Tensor, histories: Sequence[np.ndarray]) -> Tensor:
        """The model's ranking bonus after each history's last items (e.g. LLMInit's neighbour_boost)."""
        recent = torch.as_tensor(recent_items(histories, self.model.bonus_history), device=scores.device)
        return add_ranking_bonus(scores, self.model, recent)

    def _rank(
        self, users: Tensor, k: int, excluded: Sequence[np.ndarray], histories: Sequence[np.ndarray]
    ) -> TopK:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        scores = self._with_bonus(users @ self.item_vectors().T, histories)  # (b, n_items + 1)
        scores[:, 0] = float("-inf")  # padding is never an item
        counts = np.fromiter((len(e) for e in excluded), dtype=np.int64, count=len(excluded))
        if counts.sum():
            rows = torch.as_tensor(np.repeat(np.arange(len(excluded)), counts), device=scores.device)
            cols = torch.as_tensor(
                np.concatenate([np.asarray(e, dtype=np.int64) for e in excluded]), device=scores.device
            )
            scores[rows, cols] = float("-inf")
        top = torch.topk(scores, min(k, self.n_items), dim=1)
        values = top.values.float().cpu().numpy()
        return TopK(np.arange(len(users)), top.indices.cpu().numpy(), values, np.isfinite(values))

    def _recommendations(self, top: TopK, row: int) -> list[Recommendation]:
        keep = top.valid[row]
        return [
            Recommendation(self.item_ids[i - 1], float(s), self.titles[i - 1])
            for i, s in zip(top.items[row][keep].tolist(), top.scores[row][keep].tolist())
        ]

    # ------------------------------------------------------------------ recommending
    def recommend(
        self, history: Sequence[str], k: int = 10, exclude: Iterable[str] = (), exclude_history: bool = True
    ) -> list[Recommendation]:
        """The top ``k`` next items after ``history`` (raw item ids, oldest first), any user, seen or not.
        Items of the history (unless ``exclude_history=False``) and of ``exclude`` are never recommended;
        fewer than ``k`` come back when fewer real items are left."""
        return self.recommend_users([history], k, [exclude], exclude_history)[0]

    def recommend_users(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude: Sequence[Iterable[str]] | None = None,
        exclude_history: bool = True,
        batch_size: int = 256,
    ) -> list[list[Recommendation]]:
        """``recommend`` for many histories at once (batched; the same results as one call each)."""
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(histories)} histories")
        tokens = [self.item_index(h) for h in histories]
        extra = [self.item_index(e, "exclude list") for e in exclude] if exclude is not None else None
        out: list[list[Recommendation]] = []
        for start in range(0, len(tokens), batch_size):
            block = tokens[start : start + batch_size]
            excluded = [
                np.concatenate([h if exclude_history else h[:0], extra[start + i] if extra else h[:0]])
                for i, h in enumerate(block)
            ]
            top = self.top_k(block, k, excluded)
            out += [self._recommendations(top, r) for r in range(len(block))]
        return out

    def recommend_known(
        self, user_id: str, k: int = 10, exclude_history: bool = True
    ) -> list[Recommendation]:
        """Next items for a user the model was trained on, after their whole known sequence."""
        users = self.require_users()
        history = users.history(users.row_of(user_id))
        top = self.top_k([history], k, [history if exclude_history else history[:0]])
        return self._recommendations(top, 0)

    def top_k_all_users(
        self, k: int = 100, exclude_history: bool = True, chunk: int = 16_384, progress: Any = None
    ) -> Iterator[TopK]:
        """Top-k of every stored user, in user order, a block at a time (``TopK.rows`` = user rows). Memory
        stays bounded: histories are encoded ``chunk`` users at a time, length-sorted in token-budget batches,
        and scored ``SCORE_BUDGET // n_items`` users at a time."""
        users = self.require_users()
        lengths = np.diff(users.offsets)
        for lo in range(0, len(users), chunk):
            rows = np.arange(lo, min(lo + chunk, len(users)))
            vectors = self._encode_rows(users, rows, lengths)
            block = max(1, SCORE_BUDGET // (self.n_items + 1))
            for start in range(0, len(rows), block):
                part = rows[start : start + block]
                histories = [users.history(r) for r in part]
                excluded = [h if exclude_history else h[:0] for h in histories]
                top = self._rank(vectors[start : start + len(part)], k, excluded, histories)
                top.rows = part
                yield top
                if progress is not None:
                    progress(len(part))

    @torch.no_grad()
    def _encode_rows(self, users: UserHistories, rows: np.ndarray, lengths: np.ndarray) -> Tensor:
        """(len(rows), D) user vectors of stored users, encoded in length order so batches pad little."""
        order = rows[np.argsort(lengths[rows], kind="stable")]
        width = np.minimum(lengths[order], self.cfg.data.max_len) + 1
        out: Tensor | None = None
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * width[end] <= TOKEN_BUDGET:
                end += 1
            batch = order[start:end]
            vec = self.user_vectors([users.history(r) for r in batch])
            if out is None:
                out = vec.new_empty(len(rows), vec.shape[1])
            out[torch.as_tensor(batch - rows[0], device=vec.device)] = vec
            start = end
        assert out is not None
        return out

    def require_users(self) -> UserHistories:
        if self.users is None:
            raise ValueError(
                "this model holds no user histories (exported with --without-users); recommend "
                "from histories instead"
            )
        return self.users

    # ------------------------------------------------------------------ new items
    def add_items(
        self,
        records: Sequence[dict[str, Any]],
        provider: Any = None,
        id_field: str | None = None,
        new_item_norm: str | None = None,
        **provider_options: Any,
    ) -> list[str]:
        """Add items never seen in training from their records (dicts with the item's id and text fields, as
        in the training data's item metadata): each is rendered with the run's prompt template, embedded by
        ``provider`` (default: the one the model was trained with; a name or a Provider), preprocessed as the
        training table was, and represented by the model family's new-item contract (``provider_options``
        override the provider's options, e.g. ``device="cuda"``; ``new_item_norm`` overrides the training
        config's ``model.new_item_norm`` for these items, LLMInit only). Returns their ids."""
        self._require_text_support()
        self._check_new_item_norm(new_item_norm)
        ids = self._new_ids(records, id_field)
        if self.templates is None:
            raise ValueError(
                "this model has no prompt template (its item vectors came from a file); use "
                "add_item_vectors with vectors made the same way"
            )
        prompts = [render_item(r, self.templates.item) for r in records]
        vectors = self.provider(provider, **provider_options).embed(prompts)
        titles = [str(r.get("title") or r.get("name") or "") for r in records]
        self.add_item_vectors(ids, vectors, titles, new_item_norm)
        return ids

    def add_item_vectors(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        titles: Sequence[str] | None = None,
        new_item_norm: str | None = None,
    ) -> None:
        """Add items from raw provider vectors (before ``embedding.center_items``, which is applied here)."""
        self._require_text_support()
        self._check_new_item_norm(new_item_norm)
        ids = [str(i) for i in ids]
        self._check_new_ids(ids)
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(ids) or (self.llm_dim and arr.shape[1] != self.llm_dim):
            raise ValueError(f"expected ({len(ids)}, {self.llm_dim}) item vectors, got {arr.shape}")
        if self.llm_center is not None:
            arr = arr - self.llm_center
        old = self.n_items
        recorded = getattr(self.model, "new_item_norm", None)
        if new_item_norm is not None:  # for this call only: the export keeps its training config
            self.model.new_item_norm = new_item_norm
        try:
            self.model.add_items(arr, self.assets)
        finally:
            if new_item_norm is not None:
                self.model.new_item_norm = recorded
        self.item_ids += ids
        self.titles += list(titles) if titles is not None else [""] * len(ids)
        self._index.update({item: self.n_items - len(ids) + 1 + i for i, item in enumerate(ids)})
        self._extend_item_vectors(old)
        self.info.setdefault("added_items", 0)
        self.info["added_items"] += len(ids)

    def provider(self, provider: Any = None, **options: Any) -> Provider:
        """The provider for new items: ``provider`` (a name or a Provider) or the recorded one, with
        ``options`` overridden, checked to have the recorded identity (other vectors would not match the item
        table)."""
        spec = self.provider_spec
        options = {k.removeprefix("provider."): v for k, v in options.items()}
        recorded = provider is None and not options
        if recorded and self._provider is not None:
            return self._provider  # built, checked and loaded by an earlier call
        if provider is None:
            if spec is None:
                raise ValueError(
                    "the model's item vectors came from a file, not a provider; pass provider= "
                    "the provider that made them"
                )
            merged = {**spec.get("options", {}), **options}
            provider = build_provider(spec["kind"], merged, name=spec.get("name", ""))
        elif isinstance(provider, str):
            provider = load_provider(provider, **options)
        elif not isinstance(provider, Provider):
            raise TypeError(f"provider must be a provider name or a Provider, not {type(provider).__name__}")
        if spec is not None and provider.identity.hash() != spec["identity_hash"]:
            raise ValueError(
                f"provider {provider.name!r} is not the one the model was trained with "
                f"({spec.get('name')!r}, identity {spec['identity_hash'][:12]}); its vectors "
                "would not match the item table"
            )
        if recorded:
            self._provider = provider
        return provider

    def _check_new_item_norm(self, value: str | None) -> None:
        """Before any embedding work: ``new_item_norm`` is one of the config's values, for a family that has
        it."""
        if value is None:
            return
        if value not in NEW_ITEM_NORMS:
            raise ValueError(f"new_item_norm = {value!r} must be one of {', '.join(NEW_ITEM_NORMS)}")
        if not hasattr(self.model, "new_item_norm"):
            raise ValueError(
                f"new_item_norm applies to llminit models only; this one is {self.cfg.model.name!r}"
            )

    def _require_text_support(self) -> None:
        if self.new_item_support != "text":
            raise NewItemsUnsupported(
                f"model family {self.cfg.model.name!r} scores items by vectors learned in training only, so "
                "an item added after training has no representation; train an LLM-enhanced family (llmesr, "
                "llminit) to add items from their text"
            )

    def _new_ids(self, records: Sequence[dict[str, Any]], id_field: str | None) -> list[str]:
        ids = []
        for n, record in enumerate(records):
            if not isinstance(record, dict):
                raise TypeError(f"item record #{n + 1} is a {type(record).__name__}, not a dict")
            fields = (id_field,) if id_field else ID_FIELDS
            key = next((f for f in fields if record.get(f) not in (None, "")), None)
            if key is None:
                raise ValueError(f"item record #{n + 1} has no id (looked for {', '.join(fields)})")
            ids.append(str(record[key]))
        self._check_new_ids(ids)
        return ids

    def _check_new_ids(self, ids: list[str]) -> None:
        known = [i for i in ids if i in self._index]
        if known:
            raise ValueError(f"item id(s) already in the catalogue: {', '.join(map(repr, known[:10]))}")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"item id {dup!r} appears twice among the new items")

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_run(cls, run: Any) -> ServedModel:
        """From a ``LoadedRun`` (esrkit.runs.load.load_run): everything a self-contained export holds."""
        cfg, inputs, data = run.cfg, run.inputs, run.data
        assets = inputs.assets
        projection = assets.pca_projection
        if projection is None and assets.pca_table is not None and assets.llm_items is not None:
            projection = projection_from_table(assets.llm_items, assets.pca_table)  # an explicit table
        provider = None
        e = cfg.embedding
        if assets.llm_items is not None and not e.item_embeddings:
            provider = load_provider(e.provider, **e.options).describe()
        templates = load_templates(e.templates) if assets.llm_items is not None else None
        attrs = data.item_attrs or [{}] * data.n_items
        titles = [str((a or {}).get("title") or (a or {}).get("name") or "") for a in attrs]
        provenance = read_json(run.run_dir.path / "provenance.json")
        info = {
            "run": str(run.run_dir.path),
            "seed": cfg.train.seed,
            "git_commit": provenance.get("environment", {}).get("git_commit"),
            "fingerprints": provenance.get("fingerprints", {}),
        }
        return cls(
            run.model,
            cfg,
            data.item_ids,
            titles,
            assets=ModelAssets(pca_projection=projection),
            llm_center=inputs.llm_center,
            llm_dim=None if assets.llm_items is None else int(assets.llm_items.shape[1]),
            provider=provider,
            templates=templates,
            users=UserHistories.from_data(data),
            info=info,
        )

    def save(self, path: Any, overwrite: bool = False, users: bool = True) -> Any:
        """Write a self-contained export folder (see esrkit/serving/folder.py)."""
        return write_export(self, path, overwrite=overwrite, users=users)
