"""Run a Python script and record the peak RSS of this process image: ``python -m bench.peak OUT SCRIPT ARGS``.

ru_maxrss (wait4, RUSAGE_CHILDREN) also counts the parent's pages the child had mapped between fork
and exec, so a child of the (large) bench process would report the bench's own size. VmHWM in
/proc/self/status is the high-water mark of the address space created at exec: the child's own peak.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    out, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        Path(out).write_text(str(vm_hwm_bytes()))


if __name__ == "__main__":
    main()
