"""Small, fast training setups shared by the training tests."""

from __future__ import annotations

import functools

import numpy as np
import torch

from esrkit.data.synthetic import SyntheticOptions, generate
from esrkit.data.tensors import DeviceSequences
from esrkit.evaluation.evaluator import Evaluator
from esrkit.models.popularity import PopularityRecommender, training_items
from esrkit.training.objectives import SelfDistillation
from esrkit.training.trainer import Trainer, TrainerOptions


@functools.lru_cache(maxsize=2)
def small_data(n_users: int = 600, n_items: int = 300):
    """A small catalogue with a clear sequential signal (routines, mild popularity skew), so a model that
    learns anything sequential beats popularity within a few epochs."""
    return generate(
        SyntheticOptions(
            n_users=n_users, n_items=n_items, seed=7, popularity_power=0.5, routine_prob=0.85, noise_prob=0.03
        )
    )


# epochs / batch size that let each backbone's official objective learn on small_data (GRU4Rec and BERT4Rec
# see one or two targets per user per epoch, SASRec one per position)
SCHEDULE = {
    "sasrec": dict(epochs=10, batch_size=32),
    "bert4rec": dict(epochs=25, batch_size=32),
    "gru4rec": dict(epochs=20, batch_size=16),
}
# the plain GRU4Rec (one target per user per epoch, no PCA start) needs longer and a wider state
SCHEDULE_ID = {**SCHEDULE, "gru4rec": dict(epochs=60, batch_size=16)}
HIDDEN_ID = {"sasrec": 32, "bert4rec": 32, "gru4rec": 64}


@functools.lru_cache(maxsize=2)
def small_assets(n_users: int = 600, n_items: int = 300):
    """Text-derived item/user embeddings (TF-IDF + SVD of the prompts), PCA table, neighbours:
    deterministic."""
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from esrkit.prompts import build_item_prompts, build_user_prompts, load_templates

    data = small_data(n_users, n_items)
    t = load_templates("generic")
    ip, up = build_item_prompts(data, t), build_user_prompts(data, t)
    tf = TfidfVectorizer().fit(ip + up)
    svd = TruncatedSVD(48, random_state=0).fit(tf.transform(ip + up))
    items = svd.transform(tf.transform(ip)).astype(np.float32)
    users = svd.transform(tf.transform(up)).astype(np.float32)
    un = users / (np.linalg.norm(users, axis=1, keepdims=True) + 1e-9)
    sim = un @ un.T
    np.fill_diagonal(sim, -np.inf)
    neighbours = np.argsort(-sim, 1, kind="stable")[:, :20]
    pca = {d: PCA(d, svd_solver="full").fit_transform(items).astype(np.float32) for d in (16, 32)}
    return items, pca, neighbours


def popularity_score(data, split: str = "test", metric: str = "ndcg@10") -> float:
    seqs = DeviceSequences(data)
    pop = PopularityRecommender(data.n_items).fit_counts(training_items(data))
    return Evaluator(data, split, seqs, seed=0).evaluate(pop, ("sampled",)).get("sampled", metric)


MAX_LEN = 50  # shorter than the official 200 so recurrent padding emulation stays cheap in tests


def train_and_score(
    model,
    data,
    epochs: int = 6,
    alpha: float = 0.0,
    neighbours=None,
    seed: int = 0,
    run_dir=None,
    resume: bool = False,
    max_len: int = MAX_LEN,
    **opts,
) -> tuple[float, Trainer]:
    """Train ``model`` (built with the same ``max_len``) and return its test N@10 (sampled protocol)."""
    torch.manual_seed(seed)
    seqs = DeviceSequences(data)
    valid = Evaluator(data, "valid", seqs, seed=seed, max_len=max_len)
    test = Evaluator(data, "test", seqs, seed=seed, max_len=max_len)
    sd = None
    if alpha > 0:
        sd = SelfDistillation(
            seqs,
            neighbours,
            10,
            alpha,
            opts.pop("sd_loss", "mse_mean"),
            max_len,
            opts.pop("teacher_refresh", "step"),
        )
    o = TrainerOptions(epochs=epochs, patience=epochs, seed=seed, max_len=max_len, **opts)
    trainer = Trainer(
        model, seqs, o, lambda m, e: valid.evaluate(m, ("sampled",)).metrics, run_dir, sd, progress=False
    )
    trainer.fit(resume=resume)
    return test.evaluate(model, ("sampled",)).get("sampled", "ndcg@10"), trainer
