"""Writing benchmark tables into benchmarks/RESULTS.md, one section per benchmark, with machine and date."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    gpu = os.environ.get("BENCH_GPU_NAME", "")
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}" + (f", {gpu}" if gpu else "")


def write_section(name: str, body: str, machine: str | None = None) -> None:
    """Replace (or append) the section `## name` of RESULTS.md with `body`, stamped with machine and date
    (`machine`: where the numbers were measured, when that is not this machine, e.g. results fetched from a GPU host)."""
    stamp = f"_Measured {datetime.date.today().isoformat()} on {machine or machine_description()}._\n\n"
    section = f"## {name}\n\n{stamp}{body.rstrip()}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nEach section is rewritten by the benchmark named in its title.\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)


def by_tenth(values: list[float]) -> list[float]:
    """Means of `values` over ten consecutive, near-equal slices (fewer when there are fewer than ten values)."""
    import itertools
    import statistics

    slices = min(10, len(values))
    bounds = [round(i * len(values) / slices) for i in range(slices + 1)]
    return [statistics.fmean(values[a:b]) for a, b in itertools.pairwise(bounds)]
