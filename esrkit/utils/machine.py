"""The machine a number came from: CPU model and memory, for run provenance and benchmark headers.

``platform.processor()`` is the architecture name (``x86_64``) on Linux, which cannot tell two cloud machines
apart whose floating-point order, and hence a run's last digits and its speed, differ; ``/proc`` can.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the architecture where the system does not say."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Total memory in GiB (``/proc/meminfo``), or None where the system does not say."""
    try:
        found = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo.read_text(encoding="utf-8"), re.M)
    except OSError:
        return None
    return int(found.group(1)) / 2**20 if found else None
