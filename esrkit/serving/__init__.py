"""Serving what was trained: self-contained export folders, a Python API and new items from their text.

``esrkit.load(DIR)`` -> ``ServedModel`` with ``recommend(history=[...])``, ``recommend_users``, ``add_items``;
``export_run(RUN, DIR)`` writes the folder (docs/SERVING.md). Serving sits above the orchestration layer
(esrkit/runs/): it loads trained runs with ``esrkit.runs.load.load_run``; only the command line is above it.
"""

from esrkit.serving.export import ExportError, export_run, load, verify_export
from esrkit.serving.model import Recommendation, ServedModel, UnknownItemsError, UserHistories

__all__ = [
    "ExportError",
    "Recommendation",
    "ServedModel",
    "UnknownItemsError",
    "UserHistories",
    "export_run",
    "load",
    "verify_export",
]
