"""What the benchmark scripts share: the machine's name and writing their JSON report.

The scripts run as ``python benchmarks/<name>.py``, so this directory is first on ``sys.path`` and they import it as
``_report``.
"""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def write_report(report: dict, out: str | Path | None) -> None:
    """Write ``report`` as indented JSON to ``out`` (parents created) and say where; nothing when ``out`` is None."""
    if not out:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
