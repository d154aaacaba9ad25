"""Helpers shared by the benchmark scripts: machine description and RESULTS.md appending."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
DATA = HERE / "data"  # generated inputs (ignored by git)


def machine() -> str:
    """One line naming the machine the numbers were taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_results(title: str, command: str, table: str, notes: str = "") -> None:
    """Append one dated section (machine, command, table, notes) to benchmarks/RESULTS.md."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (f"\n## {title} ({stamp}, commit {git_rev()})\n\nMachine: {machine()}  \n"
            f"Command: `{command}`\n\n{table}\n")
    if notes:
        text += f"\n{notes}\n"
    with open(RESULTS, "a") as fh:
        fh.write(text)
    print(text)


def markdown_table(rows: list[dict]) -> str:
    """A markdown table from a list of dicts sharing keys."""
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:,.3g}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
