"""How much the text neighbours tell about the next item, beside what co-purchases tell (docs/RESULTS.md,
"Best under full ranking").

    python docs/results/neighbour_agreement.py RUN_DIR [RUN_DIR ...]

For a run of LLMInit with ``model.text_neighbours`` (its best checkpoint holds each item's K nearest items by
text), every user's validation step (a = last item of the training part, b = the validation target, which no
training count has seen): how often b is among a's K text neighbours, among the K items most often bought by
the same users as a (counted on the training parts), and among the text neighbours but not the co-bought ones
(what text adds to what the collaborative signal already knows). Split by whether b is a head item (the most
popular 20% by training count) or a tail item. Makes no LLM call.
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp

from esrkit.runs.load import load_run


def training_parts(data) -> list[np.ndarray]:
    train_len, _ = data.split_lengths("train")
    return [data.sequence(u)[: train_len[u]] for u in range(data.n_users)]


def head_items(parts: list[np.ndarray], n_items: int) -> np.ndarray:
    """(n_items + 1,) bool: the most popular 20% of items by training count (row 0 = padding)."""
    counts = np.bincount(np.concatenate(parts), minlength=n_items + 1)
    order = np.argsort(-counts[1:], kind="stable") + 1
    head = np.zeros(n_items + 1, dtype=bool)
    head[order[: n_items // 5]] = True
    return head


def co_bought_top(parts: list[np.ndarray], n_items: int, k: int) -> np.ndarray:
    """(n_items + 1, k): each item's k items bought by the most common users (training parts), ties by id; 0
    pads an item with fewer."""
    rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(parts)])
    x = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(parts))), shape=(len(parts), n_items + 1))
    x.data[:] = 1.0  # an item bought twice by one user counts once
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    top = np.zeros((n_items + 1, k), dtype=np.int64)
    for i in range(1, n_items + 1):
        cols, vals = co.indices[co.indptr[i] : co.indptr[i + 1]], co.data[co.indptr[i] : co.indptr[i + 1]]
        order = np.lexsort((cols, -vals))[:k]
        top[i, : len(order)] = cols[order]
    return top


def analyse(run_dir: str) -> list[str]:
    run = load_run(run_dir, device="cpu")
    tn = run.model.text_neighbours
    if tn is None:
        raise SystemExit(f"{run_dir}: needs a run with model.text_neighbours")
    data = run.inputs.data
    n = data.n_items
    text = tn.neighbour_ids[: n + 1].cpu().numpy()  # row 0: padding
    k = text.shape[1]
    parts = training_parts(data)
    head = head_items(parts, n)
    co = co_bought_top(parts, n, k)
    prefix, target = data.split_lengths("valid")
    users = [u for u in range(data.n_users) if prefix[u] >= 1]
    a = np.array([data.sequence(u)[prefix[u] - 1] for u in users])
    b = np.array([data.sequence(u)[target[u]] for u in users])
    in_text, in_co = (text[a] == b[:, None]).any(1), (co[a] == b[:, None]).any(1)
    lines = [
        f"## {run_dir} ({data.name}: {n:,} items, K = {k}; chance K / items = {k / (n - 1):.4f})",
        "",
        f"| validation targets b | users | b among a's {k} text neighbours | "
        f"b among a's {k} most co-bought | text neighbour, not co-bought |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, pick in [("all", np.ones(len(b), bool)), ("head 20%", head[b]), ("tail 80%", ~head[b])]:
        t, c = in_text[pick].mean(), in_co[pick].mean()
        only = (in_text & ~in_co)[pick].mean()
        lines.append(f"| {label} | {pick.sum():,} | {t:.4f} | {c:.4f} | {only:.4f} |")
    return lines + [""]


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print("\n".join(analyse(path)))
