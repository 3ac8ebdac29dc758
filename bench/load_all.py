"""The three load benches of docs/RELIABILITY.md, one after the other, one JSON line each.

.venv/bin/python -m bench.load_all
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ["bench.load_job_reads", "--rate", "200", "--seconds", "60"],
    ["bench.load_uploads", "--count", "20", "--megabytes", "200"],
    ["bench.load_drain", "--jobs", "1000"],
]


def main() -> None:
    for bench in BENCHES:
        subprocess.run([sys.executable, "-m", *bench], check=True)


if __name__ == "__main__":
    main()
