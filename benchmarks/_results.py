"""Shared helpers for benchmark scripts: the machine description and section-wise updates of RESULTS.md."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path

from esrkit.utils.machine import cpu_model, memory_gib

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine(modules: tuple[str, ...] = ("torch", "numpy")) -> str:
    """CPU model, cores, RAM, GPU, Python and library versions, and the load average (CPU timings on a shared
    2-core machine depend on it)."""
    cpu = cpu_model()
    gib = memory_gib()
    mem = f", {gib:.1f} GiB RAM" if gib is not None else ""
    gpu = ", no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    versions = []
    for module in modules:
        with contextlib.suppress(ImportError):
            versions.append(f"{module} {__import__(module).__version__}")
    load = f"; load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs{mem}{gpu}; Python {platform.python_version()}, "
        + ", ".join(versions)
        + load
    )


def replace_section(title: str, body: str, level: int = 2) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md, leaving other sections untouched."""
    from esrkit.utils.io import atomic_write_text

    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head = "#" * level + " " + title
    pattern = re.compile(rf"^{re.escape(head)}\n.*?(?=^#{{1,{level}}} |\Z)", re.S | re.M)
    block = f"{head}\n\n{body.strip()}\n\n"
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    atomic_write_text(RESULTS, text)
