"""esrkit: LLM-enhanced sequential recommendation (LLM-ESR) as provider-agnostic software.

Importing any esrkit module first runs this file, so the OpenMP wait policy is set before torch is imported:
on small CPUs PyTorch's spinning OpenMP threads make loops that mix Python work and small tensor ops much
slower (benchmarks/RESULTS.md). Users who set OMP_WAIT_POLICY themselves keep their choice.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def __getattr__(name: str):
    """``esrkit.load`` imports the serving stack (torch, the models) only when it is first used, so ``import
    esrkit`` stays light."""
    if name == "load":
        from esrkit.serving import load  # lazy: the serving stack loads on first use (docstring)

        return load
    raise AttributeError(f"module 'esrkit' has no attribute {name!r}")
