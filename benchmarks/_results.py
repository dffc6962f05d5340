"""Shared helpers for benchmark scripts: the machine description and section-wise updates of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2**20:.1f} GiB RAM"
    except (OSError, AttributeError):
        pass
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs{mem}{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def replace_section(title: str, body: str, level: int = 2) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md, leaving other sections untouched."""
    from esrkit.utils.io import atomic_write_text

    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head = "#" * level + " " + title
    pattern = re.compile(rf"^{re.escape(head)}\n.*?(?=^#{{1,{level}}} |\Z)", re.S | re.M)
    block = f"{head}\n\n{body.strip()}\n\n"
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    atomic_write_text(RESULTS, text)
