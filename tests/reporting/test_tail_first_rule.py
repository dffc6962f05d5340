"""The tail-first selection rule of docs/results/neighbour_boost.py (docs/RESULTS.md, "Selecting for the tail
on validation"): validation only, within a tolerance of the best validation N@10."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results" / "neighbour_boost.py"


def load_script():
    spec = importlib.util.spec_from_file_location("neighbour_boost_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def means(*rows):
    return {setting: {"valid": v, "valid_tail_item": t} for setting, v, t in rows}


def test_picks_the_best_tail_within_the_tolerance_and_never_below_it():
    nb = load_script()
    none, small, large, huge = (0.0, 1, 0.0), (0.25, 1, 2.0), (0.5, 3, 3.0), (1.0, 3, 3.0)
    mean = means((none, 0.100, 0.050), (small, 0.101, 0.055), (large, 0.1002, 0.060), (huge, 0.095, 0.070))
    settings = [none, small, large, huge]
    # floor 0.99 x 0.101 = 0.09999: `large` is above it, `huge` (the best tail) below
    assert nb.pick_tail_first(settings, mean, 0.01) == large
    assert nb.pick_tail_first(settings, mean, 0.10) == huge
    assert nb.pick_tail_first(settings, mean, 0.0) == small  # no tolerance: the best validation N@10


def test_ties_go_to_the_smaller_bonus():
    nb = load_script()
    a, b = (0.25, 1, 0.0), (0.5, 1, 0.0)
    mean = means((a, 0.1, 0.06), (b, 0.1, 0.06))
    assert nb.pick_tail_first([a, b], mean, 0.01) == a
