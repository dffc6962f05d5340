from pathlib import Path

import pytest

from esrkit.training.rundir import environment
from esrkit.utils.machine import cpu_model, memory_gib

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""


def test_cpu_model_reads_the_model_name(tmp_path: Path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_model(path) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"


@pytest.mark.parametrize("text", [None, "processor\t: 0\nflags\t: fpu\n"])
def test_cpu_model_falls_back_to_the_architecture(tmp_path: Path, text):
    path = tmp_path / "cpuinfo"
    if text is not None:
        path.write_text(text)
    name = cpu_model(path)
    assert name and "model name" not in name


def test_memory_gib(tmp_path: Path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       25165824 kB\nMemFree:         1000 kB\n")
    assert memory_gib(path) == pytest.approx(24.0)
    assert memory_gib(tmp_path / "missing") is None
    path.write_text("MemFree: 1 kB\n")
    assert memory_gib(path) is None


def test_run_provenance_names_the_cpu_model():
    env = environment()
    assert env["cpu"] == cpu_model()
    assert env["cores"] >= 1
