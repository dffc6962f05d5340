"""Choose the ranking-time text terms of trained runs on validation (``esrkit tune-bonus``).

The text-neighbour bonus (``model.neighbour_boost`` β, ``neighbour_boost_items`` M,
``neighbour_boost_tail`` s) and the dense text term (``model.text_boost`` γ, ``text_boost_items`` m,
``text_boost_tail`` t) change how a trained LLMInit-with-text-neighbours model ranks, not what it learns, so
one trained run serves every setting: each setting of a grid (the two terms' grids combined) is evaluated on
the validation split (full ranking, as ``esrkit evaluate RUN --split valid --neighbour-boost β ...``), and
the one with the best mean validation N@10 over the runs given (a recipe's seeds) is chosen, ties to the
smaller setting. The test split is read only when asked, to report the choice beside no bonus; it never
takes part in choosing.

The popularity tilt (``model.popularity_tilt`` α, ``popularity_tilt_items`` M) joins the grid the same way,
off unless its values are given.

A catalogue that puts its tail first can choose by the tail-first rule instead: among the settings within a
relative tolerance of the best mean validation N@10, the best mean validation tail-item N@10.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from esrkit.config import RANKING_OPTIONS, ConfigError
from esrkit.evaluation.metrics import metrics_from_ranks
from esrkit.reporting.collect import seed_record
from esrkit.reporting.records import differences
from esrkit.runs.load import load_run, run_evaluator
from esrkit.utils.errors import error_text
from esrkit.utils.io import read_json


class Setting(NamedTuple):
    beta: float  # model.neighbour_boost
    items: int  # model.neighbour_boost_items: the neighbours of the last M items
    tail: float  # model.neighbour_boost_tail: rarer neighbours get more
    text: float = 0.0  # model.text_boost: the cosine by text with the last items, for every item
    text_items: int = 1  # model.text_boost_items
    text_tail: float = 0.0  # model.text_boost_tail: items rarer than average get more
    tilt: float = 0.0  # model.popularity_tilt: alpha (h_u - c) z_i
    tilt_items: int = 1  # model.popularity_tilt_items: h_u from the last M items

    def label(self) -> str:
        parts = [] if self.beta == 0 else [f"beta {self.beta:g}, last {self.items}, tail {self.tail:g}"]
        if self.text:
            parts.append(f"text {self.text:g}, last {self.text_items}, tail {self.text_tail:g}")
        if self.tilt:
            parts.append(f"tilt {self.tilt:g}, last {self.tilt_items}")
        return "; ".join(parts) or "none"

    def options(self) -> str:
        """The same setting as command-line options of ``esrkit evaluate`` / ``export`` / ``recommend``."""
        return (
            f"--neighbour-boost {self.beta:g} --neighbour-boost-items {self.items} "
            f"--neighbour-boost-tail {self.tail:g} --text-boost {self.text:g} "
            f"--text-boost-items {self.text_items} --text-boost-tail {self.text_tail:g} "
            f"--popularity-tilt {self.tilt:g} --popularity-tilt-items {self.tilt_items}"
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Setting:
        """The setting of a record's row (records written before the text term lack its fields: off)."""
        return cls(**{name: record[name] for name in cls._fields if name in record})

    @classmethod
    def of(cls, model) -> Setting:
        """The setting a model ranks with now (the inverse of ``apply``)."""
        return cls(*(getattr(model, name) for name in RANKING_OPTIONS))

    def apply(self, model) -> None:
        """Set the ranking-time attributes ``load_run(ranking=...)`` would (``config.RANKING_OPTIONS``, in
        this tuple's order), without a reload."""
        for name, value in zip(RANKING_OPTIONS, self, strict=True):
            setattr(model, name, value)


NO_BONUS = Setting(0.0, 1, 0.0)


def _part(values: Sequence[float], items: Sequence[int], tails: Sequence[float], name: str) -> list[tuple]:
    """Off once, then every (value > 0, M, s) of one ranking-time term, smallest first."""
    if any(v < 0 for v in values) or any(m < 1 for m in items) or any(s < 0 for s in tails):
        raise ConfigError(f"the {name} grid needs values >= 0, items >= 1 and tails >= 0")
    if not items or not tails:
        raise ConfigError(f"the {name} grid needs at least one value of items and of tails")
    on = set(itertools.product([float(v) for v in values if v > 0], map(int, items), map(float, tails)))
    return [(0.0, 1, 0.0), *sorted(on)]


def bonus_grid(
    betas: Sequence[float],
    items: Sequence[int],
    tails: Sequence[float],
    texts: Sequence[float] = (0.0,),
    text_items: Sequence[int] = (1,),
    text_tails: Sequence[float] = (0.0,),
    tilts: Sequence[float] = (0.0,),
    tilt_items: Sequence[int] = (1,),
) -> list[Setting]:
    """Every combination of the bonus's grid (β, M, s), the text term's (γ, m, t) and the popularity tilt's
    (α, M), each off once, then smallest first: the order ties are broken in (none of the terms first)."""
    bonus = _part(betas, items, tails, "bonus")
    text = _part(texts, text_items, text_tails, "text term")
    tilt = [t[:2] for t in _part(tilts, tilt_items, (0.0,), "popularity tilt")]
    return [Setting(*b, *t, *a) for b, t, a in itertools.product(bonus, text, tilt)]


def check_runs(run_dirs: Sequence[str | Path], new_items: bool = False) -> None:
    """Before any evaluation: every folder a finished run with text neighbours (with ``new_items``, trained
    with held-out items), and all of them one experiment (seeds of one configuration), since one setting is
    chosen for all."""
    configs = []
    for path in run_dirs:
        record = seed_record(Path(path))
        if record is None:
            raise ConfigError(f"{path}: not a finished esrkit run (no results.json); train it first")
        if not (record["config"].get("model", {}).get("text_neighbours") or 0) > 0:
            raise ConfigError(
                f"{path}: the bonus needs a run trained with model.text_neighbours > 0 (model.name=llminit)"
            )
        if new_items and not (record["config"].get("data", {}).get("cold_items") or 0) > 0:
            raise ConfigError(
                f"{path}: --new-items validates with the run's held-out items added, so it needs a run "
                "trained with data.cold_items > 0 (e.g. --set data.cold_items=0.1)"
            )
        configs.append(record)
    ranking = {f"model.{name}" for name in RANKING_OPTIONS}  # what is being chosen may differ
    for path, other in zip(run_dirs[1:], configs[1:], strict=True):
        differ = [k for k in differences(configs[0], other) if k not in ranking]
        if differ:
            raise ConfigError(
                f"{path} trained another experiment than {run_dirs[0]} ({', '.join(differ)}); choose the "
                "bonus for the seeds of one configuration at a time"
            )


def _ndcg(ranks: np.ndarray, mask: np.ndarray | None = None) -> float:
    return float(metrics_from_ranks(ranks if mask is None else ranks[mask], (10,))["ndcg@10"])


def rank_settings(run, split: str, settings: Sequence[Setting], new_items: bool = False) -> dict[str, list]:
    """N@10 overall, on the split's tail items and, where the split holds items added after training, on
    those ("cold_item"), under every setting, as the evaluator ranks (the terms applied as reported metrics
    and serving apply them). The settings change ranking only, so the users are encoded once."""
    evaluator = run_evaluator(run, split, new_items)
    masks = evaluator.groups.masks()
    groups = {g: masks[g] for g in ("tail_item", "cold_item") if g in masks}
    users = evaluator.user_vectors(run.model)
    out: dict[str, list] = {"overall": [], **{g: [] for g in groups}}
    for setting in settings:
        setting.apply(run.model)
        ranks = evaluator.evaluate(run.model, ("full",), users=users).ranks["full"]
        out["overall"].append(_ndcg(ranks))
        for g, mask in groups.items():
            out[g].append(_ndcg(ranks, mask))
    return out


def evaluate_run(
    run_dir: str | Path,
    settings: Sequence[Setting],
    with_test: bool = False,
    device: str = "cpu",
    new_items: bool = False,
) -> dict[str, Any]:
    """One run's validation (and, with ``with_test``, test) full N@10, overall and on tail items, under every
    setting: ``{"run", "settings": [{"beta", "items", "tail", "text", "text_items", "text_tail", "valid",
    "valid_tail_item"[, "valid_cold_item"][, "test"]}]}``. ``new_items``: a cold-item run validated with its
    held-out items added, as at test (its warm validation otherwise, the one its epochs were chosen on)."""
    run = load_run(run_dir, device, add_cold=new_items)
    valid = rank_settings(run, "valid", settings, new_items)
    test = None
    if with_test:  # the test ranks a cold-item run with its held-out items added: reload only if they are not
        tested = run if new_items or run.inputs.cold is None else load_run(run_dir, device)
        test = rank_settings(tested, "test", settings)
    rows = []
    for i, setting in enumerate(settings):
        row = setting._asdict()
        row.update({"valid" if g == "overall" else f"valid_{g}": values[i] for g, values in valid.items()})
        if test is not None:
            row["test"] = {g: values[i] for g, values in test.items()}
        rows.append(row)
    return {"run": str(run_dir), "settings": rows}


def mean_over_runs(records: Sequence[dict[str, Any]], settings: Sequence[Setting]) -> dict[Setting, dict]:
    """Each setting's mean over the runs of every number recorded (validation; test where present)."""
    out = {}
    for i, setting in enumerate(settings):
        rows = [r["settings"][i] for r in records]
        fields = [k for k in ("valid", "valid_tail_item", "valid_cold_item") if all(k in row for row in rows)]
        mean = {k: float(np.mean([row[k] for row in rows])) for k in fields}
        if all("test" in row for row in rows):
            tests = [row["test"] for row in rows]
            groups = [g for g in ("overall", "tail_item", "cold_item") if all(g in t for t in tests)]
            mean.update({g: float(np.mean([t[g] for t in tests])) for g in groups})
        out[setting] = mean
    return out


def best_by(field: str, candidates: Sequence[Setting], settings: Sequence[Setting], mean: dict) -> Setting:
    """The candidate with the best mean ``field`` (to 6 decimals); ties to the smaller bonus (earlier in
    ``settings``)."""
    return max(candidates, key=lambda k: (round(mean[k][field], 6), -settings.index(k)))


def pick_best(settings: Sequence[Setting], mean: dict) -> Setting:
    """The best mean validation N@10."""
    return best_by("valid", settings, settings, mean)


def pick_tail_first(settings: Sequence[Setting], mean: dict, tolerance: float) -> Setting:
    """Best mean validation tail-item N@10 among the settings within ``tolerance`` (relative) of the best mean
    validation N@10; ties to the smaller bonus."""
    floor = (1 - tolerance) * max(mean[k]["valid"] for k in settings)
    near = [k for k in settings if mean[k]["valid"] >= floor]
    return best_by("valid_tail_item", near, settings, mean)


def tune_bonus(
    run_dirs: Sequence[str | Path],
    settings: Sequence[Setting],
    tail_first: Sequence[float] = (),
    with_test: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = lambda message: None,
    new_items: bool = False,
) -> dict[str, Any]:
    """Evaluate the grid on every run and choose on validation: the record ``{"chosen", "tail_first"?,
    "runs", "mean"}`` (``docs/results/neighbour-boost-*.json`` are such records, written before "mean");
    ``new_items``: validation with a cold-item run's held-out items added (``evaluate_run``)."""
    check_tolerances(tail_first)
    check_runs(run_dirs, new_items)
    records = []
    for path in run_dirs:
        log(f"{path}: {len(settings)} settings")
        records.append(evaluate_run(path, settings, with_test, device, new_items))
    return choose(records, settings, tail_first)


def check_tolerances(tail_first: Sequence[float]) -> None:
    if any(not 0 <= tol < 1 for tol in tail_first):
        raise ConfigError("--tail-first tolerances are fractions in [0, 1), e.g. 0.01,0.02")


def choose(records: Sequence[dict[str, Any]], settings: Sequence[Setting], tail_first=()) -> dict[str, Any]:
    """The tune-bonus record of per-run records (``evaluate_run``'s) evaluated on ``settings``."""
    mean = mean_over_runs(records, settings)
    chosen = pick_best(settings, mean)
    record: dict[str, Any] = {"chosen": chosen._asdict(), "runs": list(records)}
    if tail_first:
        record["tail_first"] = [
            {"tolerance": tol, **pick_tail_first(settings, mean, tol)._asdict()} for tol in tail_first
        ]
    record["mean"] = [{**s._asdict(), **mean[s]} for s in settings]
    return record


def combine_records(paths: Sequence[str | Path], tail_first: Sequence[float] = ()) -> dict[str, Any]:
    """Choose from records that ``tune-bonus --json`` wrote for some of the runs each (the seeds evaluated by
    separate processes or machines at once): the same choice as one invocation over every run. Refused,
    naming the file: a file that is not such a record, records of different grids, a run in two records, or
    runs of different experiments (``check_runs``)."""
    check_tolerances(tail_first)
    runs: list[dict[str, Any]] = []
    grid: list[Setting] | None = None
    first = ""
    for path in paths:
        try:
            record = read_json(path)
            found = record["runs"]
            grids = [[Setting.from_record(row) for row in run["settings"]] for run in found]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path}: not a record of esrkit tune-bonus --json ({error_text(exc)}); write one per run "
                "with `esrkit tune-bonus RUN --json FILE`"
            ) from None
        for run, settings in zip(found, grids, strict=True):
            if grid is None:
                grid, first = settings, str(path)
            elif settings != grid:
                raise ConfigError(
                    f"{path}: {run['run']} was evaluated on another grid than {first}; evaluate every run "
                    "with the same grid options"
                )
            if any(run["run"] == seen["run"] for seen in runs):
                raise ConfigError(f"{path}: {run['run']} is in two of the records; give each run once")
            runs.append(run)
    if grid is None:
        raise ConfigError("--records: the records hold no run")
    check_runs([run["run"] for run in runs])
    return choose(runs, grid, tail_first)
