"""Why does one provider's frozen semantic view help LLM-ESR and another's hurt it? The geometry of each item
table.

    python docs/results/embedding_geometry.py runs/results/study-scientific-sasrec \
        runs/results/scientific-llmesr-smollm2-centered          # the table in docs/RESULTS.md (extra runs
        optional)

For every LLM-ESR run of a provider study, the item table it trained with (from its provenance) is measured on
the study's own data:
- mean cosine between random item pairs: how much of every vector is one shared direction (anisotropy;
  mean-pooled decoder states are known to sit in a narrow cone). LLM-ESR scores items by inner products of the
  frozen table passed through a small adapter, so a shared direction adds the same amount to every item's
  score;
- variance share of the first principal component (after centring), which the PCA initialisation keeps first;
- separation: cosine of consecutive items in training sequences minus cosine of random pairs, in units of the
  random pairs' standard deviation. This is the signal the frozen view can use: how much closer items bought
  one after the other are than unrelated items.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from esrkit.config import config_from_dict
from esrkit.runs.inputs import load_data
from esrkit.utils.io import read_json


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def geometry(items: np.ndarray, pairs: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Statistics of one item table (row i = item id i + 1, as in the embedding files)."""
    u = _unit(items.astype(np.float64))
    a, b = rng.integers(0, len(u), 200_000), rng.integers(0, len(u), 200_000)
    keep = a != b
    random_cos = np.einsum("ij,ij->i", u[a[keep]], u[b[keep]])
    pair_cos = np.einsum("ij,ij->i", u[pairs[:, 0]], u[pairs[:, 1]])
    centred = items - items.mean(axis=0)
    s = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    return {
        "dim": items.shape[1],
        "mean_cos": float(random_cos.mean()),
        "pc1_share": float(s[0] ** 2 / (s**2).sum()),
        "consecutive_cos": float(pair_cos.mean()),
        "separation": float((pair_cos.mean() - random_cos.mean()) / random_cos.std()),
    }


def consecutive_pairs(data) -> np.ndarray:
    """(previous, next) item rows of every training transition (the last two items of each user are held
    out)."""
    out = []
    for seq in data.sequences():
        train = np.asarray(seq[:-2]) - 1  # item ids start at 1; table rows at 0
        if len(train) > 1:
            out.append(np.stack([train[:-1], train[1:]], axis=1))
    pairs = np.concatenate(out)
    return pairs[pairs[:, 0] != pairs[:, 1]]  # a repeat purchase is not evidence of similarity


def main(study: str, extra_runs: list[str]) -> None:
    rows, data, pairs = [], None, None
    rng = np.random.default_rng(0)
    for run in sorted(Path(study).glob("llmesr-*/seed-42")) + [Path(r) / "seed-42" for r in extra_runs]:
        emb = read_json(run / "provenance.json")["fingerprints"]["embeddings"]["items"]
        if data is None:
            data = load_data(config_from_dict(read_json(run / "config.json")))
            pairs = consecutive_pairs(data)
        items = np.load(Path(emb["source"]) / "items.npy")
        if emb.get("centered"):  # embedding.center_items: the table the run really used
            items = items - items.mean(axis=0)
        rows.append(
            (emb["provider"] + (", centred" if emb.get("centered") else ""), geometry(items, pairs, rng))
        )
    print(
        "| provider | dim | mean cosine, random pairs | PC1 variance share | mean cosine, consecutive "
        "items | "
        "separation (SDs) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, g in rows:
        print(
            f"| {name} | {g['dim']} | {g['mean_cos']:.3f} | {g['pc1_share']:.3f} | "
            f"{g['consecutive_cos']:.3f} | "
            f"{g['separation']:.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results/study-scientific-sasrec", sys.argv[2:])
