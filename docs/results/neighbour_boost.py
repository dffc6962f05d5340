"""The bonus grids of docs/RESULTS.md ("The targets", "Selecting for the tail on validation"): now
``esrkit tune-bonus --with-test`` (esrkit/runs/bonus.py), kept under this name so the commands in the docs and
in the plans stated before their seeds ran (tail-first-plan*.md) run as written.

    python docs/results/neighbour_boost.py RUN_DIR [RUN_DIR ...] [--betas 0,0.25,0.5,1] [--items 1,3]
        [--tails 0,1,2] [--json FILE] [--tail-first 0.01,0.02]

Every setting is evaluated on validation and test; the choice (and the tail-first rule's) reads validation
only. Makes no LLM call. The text term (``model.text_boost``, added to ``tune-bonus``'s grid later) stays off
unless ``--text-boosts`` is given, so those commands choose from the grid they chose from then.
"""

from __future__ import annotations

import sys

from esrkit.cli.main import main

if __name__ == "__main__":
    main(["tune-bonus", "--with-test", "--text-boosts", "0", *sys.argv[1:]])
