"""`make bench`: the CPU benchmarks in turn; each prints its own figures as JSON.

The GPU benchmarks (bench.gpu_train, bench.render_throughput, bench.render_real, and
bench.render_api with `--preset fast`) run on the device; their commands are in
docs/PERFORMANCE.md. Record what these print there (or in docs/RELIABILITY.md for the load
benches) with the date, machine and load average.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

OBAMA = Path(__file__).resolve().parents[2] / "shared/data/video/obama_weekly_address_34s.mp4"
CPU_BENCHES = (
    ("preprocessing, 3-minute 720p clip", ["bench.preprocess_bench"]),
    ("load: job reads, concurrent uploads, queue drain", ["bench.load_all"]),
    ("60 s of speech -> video through the API, tiny preset on the CPU",
     ["bench.render_api", str(OBAMA), "--seconds", "60", "--preset", "tiny", "--renders", "2"]),
)


def main() -> int:
    failures = 0
    for title, module in CPU_BENCHES:
        print(f"== {title} (load average {os.getloadavg()[0]:.1f})", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, "-m", *module], check=False).returncode
        print(f"== {title}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        failures += code != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
