"""How fast is `keraspec validate specs/` next to merely importing TensorFlow?

Both are timed as fresh processes of the same interpreter, interleaved, in one run.
Usage: python benchmarks/validate_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    commands = {
        "keraspec validate specs/": [sys.executable, "-m", "compiler.cli", "validate", "specs/"],
        'python -c "import tensorflow"': [sys.executable, "-c", "import tensorflow"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm the file cache once
        _time(cmd)
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(_time(cmd))
    n_specs = len([f for f in os.listdir(os.path.join(ROOT, "specs")) if not f.startswith(".")])
    validate, tf_import = (statistics.median(t) for t in times.values())
    print(
        f"runs: {args.runs} each, interleaved; median wall time; {n_specs} specs; "
        f"cpus: {os.cpu_count()}"
    )
    print("| command | median (s) | min (s) |")
    print("| --- | ---: | ---: |")
    for name, ts in times.items():
        print(f"| `{name}` | {statistics.median(ts):.3f} | {min(ts):.3f} |")
    print(
        f"\nvalidate is {tf_import / validate:.1f}x faster than importing TensorFlow "
        "(target: >= 20x)"
    )


if __name__ == "__main__":
    main()
