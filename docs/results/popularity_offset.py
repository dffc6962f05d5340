"""Error analysis: does a popularity offset at ranking time reach the tail more cheaply than the bonus?

    python docs/results/popularity_offset.py OUT_JSON RUN/seed-42 RUN/seed-43 RUN/seed-44
    python docs/results/popularity_offset.py --records A.json B.json -o OUT_JSON   # join, print the table

For trained LLMInit runs with text neighbours, prints the mean length of the item vectors per popularity band
(are tail items scored low for being short?), how popular in training each split's targets were, and, for
five bonus settings x six offsets tau, validation and test full N@10 overall and on tail items (mean over the
runs), the item scores shifted by -tau z_i (z_i the item's standardised log(1 + training count): post-hoc
logit adjustment, Menon et al., ICLR 2021). Nothing here chooses: it shows the trade each dial makes, for
docs/RESULTS.md ("A popularity offset at ranking time"). The offset is added as one more coordinate (users 1,
items -tau z), so the evaluator ranks exactly as it ranks the bonus and the history exclusion, unchanged.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.models.popularity import training_items
from esrkit.runs.bonus import Setting
from esrkit.runs.load import load_run, run_evaluator

BONUSES = [(0.0, 1, 0.0), (0.25, 3, 1.0), (0.5, 1, 2.0), (0.75, 3, 3.0), (1.0, 1, 2.0)]  # beta, last M, s
TAUS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4]


def ndcg10(ranks: np.ndarray) -> float:
    return float(metrics_from_ranks(ranks, (10,))["ndcg@10"])


def lengths_by_band(vectors: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    cuts = torch.quantile(z[1:], torch.tensor([0.2, 0.5, 0.8]))
    band = torch.bucketize(z[1:], cuts)
    lengths = vectors[1:].norm(dim=1)
    names = ("least popular 20%", "20-50%", "50-80%", "most popular 20%")
    return {names[b]: float(lengths[band == b].mean()) for b in range(4)}


def with_offset_column(users: torch.Tensor, items: torch.Tensor, offset: torch.Tensor):
    """User and item vectors with one more coordinate (users 1, items ``offset``), so every score gains the
    item's offset."""
    return torch.nn.functional.pad(users, (0, 1), value=1.0), torch.cat([items, offset[:, None]], 1)


def target_popularity(counts: np.ndarray, evaluator) -> dict[str, float]:
    """How popular in training a split's targets were (test's come later in time than validation's)."""
    return {
        "median_training_count": float(np.median(counts[np.asarray(evaluator.targets)])),
        "tail_item_share": float(evaluator.groups.masks()["tail_item"].mean()),
    }


def grid(run_dir: str) -> tuple[dict, dict, dict]:
    run = load_run(run_dir, "cpu", add_cold=False)
    model = run.model
    counts = np.bincount(training_items(run.inputs.data), minlength=model.n_items + 1)
    z = model.text_neighbours.popularity_z[: model.n_items + 1]  # what the bonus's tail weighting reads
    with torch.no_grad():
        items = model.all_item_vectors()
    out: dict[str, dict] = {}
    targets: dict[str, dict] = {}
    for split in ("valid", "test"):
        evaluator = run_evaluator(run, split)
        tail = evaluator.groups.masks()["tail_item"]
        targets[split] = target_popularity(counts, evaluator)
        users = evaluator.user_vectors(model)  # the settings change ranking only: encode once
        for (beta, last, s), tau in itertools.product(BONUSES, TAUS):
            Setting(beta, last, s).apply(model)
            shifted_users, shifted_items = with_offset_column(users, items, -tau * z)
            model.all_item_vectors = lambda shifted=shifted_items: shifted
            ranks = evaluator.evaluate(model, ("full",), users=shifted_users).ranks["full"]
            out.setdefault(f"beta {beta:g}, last {last}, s {s:g}, tau {tau:g}", {})[split] = {
                "overall": ndcg10(ranks),
                "tail_item": ndcg10(ranks[tail]),
            }
    return out, lengths_by_band(items, z), targets


def print_table(record: dict) -> None:
    """The mean over the record's runs of every setting's four numbers."""
    runs = list(record)
    print("| setting | valid N@10 | valid tail-item | test N@10 | test tail-item |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key in record[runs[0]]["settings"]:
        cells = [
            np.mean([record[r]["settings"][key][split][group] for r in runs])
            for split in ("valid", "test")
            for group in ("overall", "tail_item")
        ]
        print(f"| {key} | {cells[0]:.5f} | {cells[1]:.5f} | {cells[2]:.4f} | {cells[3]:.4f} |")


def main(argv: list[str]) -> None:
    """``OUT_JSON RUN...`` evaluates the runs; ``--records A.json B.json ... -o OUT_JSON`` joins records of
    different runs (e.g. evaluated in parallel) and prints their table."""
    if argv[0] == "--records":
        out_json = argv[argv.index("-o") + 1]
        record = {}
        for path in argv[1 : argv.index("-o")]:
            record.update(json.loads(Path(path).read_text()))
    else:
        out_json, record = argv[0], {}
        for run_dir in argv[1:]:
            settings, lengths, targets = grid(run_dir)
            record[run_dir] = {"item_vector_length": lengths, "targets": targets, "settings": settings}
            print(run_dir, "item vector length by popularity:", {k: round(v, 3) for k, v in lengths.items()})
            print(run_dir, "targets' training popularity:", targets)
    Path(out_json).write_text(json.dumps(record, indent=1) + "\n")
    print_table(record)


if __name__ == "__main__":
    main(sys.argv[1:])
