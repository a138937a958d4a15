#!/usr/bin/env python
"""How long `aio-reid --help` takes to start, as a ratio to `python -c pass` measured in the same run (issue target:
under 2 s; absolute times differ between machines, the ratio less so). Prints what else was running (load average).

    python benchmarks/bench_cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def seconds(command: list[str], repeats: int) -> float:
    """Median wall time of `command` over `repeats` runs (one unmeasured warm-up run first)."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine slows every figure)")
    baseline = seconds([sys.executable, "-c", "pass"], args.repeats)
    cli = seconds([sys.executable, "-m", "aio_reid.cli", "--help"], args.repeats)
    package = seconds([sys.executable, "-c", "import modeling_aio"], args.repeats)
    print(f"python -c pass           {baseline:6.3f} s   1.0x")
    print(f"aio-reid --help          {cli:6.3f} s  {cli / baseline:5.1f}x")
    print(f"import modeling_aio      {package:6.3f} s  {package / baseline:5.1f}x  (what --help used to import)")


if __name__ == "__main__":
    main()
