"""`import vl_adapters` against `import torch`, side by side in one run.

Each measurement is a fresh interpreter timed from outside (start-up included). The two imports run in
turn (torch, vl_adapters, torch, ...) so that a change in the machine's load reaches both, and the
difference is taken pair by pair. The target (issue 13): the median difference is under 0.5 s.

    python benchmarks/import_time.py            # 15 pairs after 1 warm-up pair
    python benchmarks/import_time.py --runs 31
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("open_clip", "transformers", "torch_geometric", "networkx", "decord", "av", "peft", "matplotlib")


def timed_import(module: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env,
                          check=True)
    return time.perf_counter() - start, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="pairs to time (after one warm-up pair)")
    args = parser.parse_args()
    timed_import("torch"), timed_import("vl_adapters")  # warm the file cache
    torch_s, package_s, printed = [], [], set()
    for _ in range(args.runs):
        seconds, _ = timed_import("torch")
        torch_s.append(seconds)
        seconds, stderr = timed_import("vl_adapters")
        package_s.append(seconds)
        if stderr.strip():
            printed.add(stderr.strip())
    differences = [p - t for p, t in zip(package_s, torch_s, strict=True)]
    check = subprocess.run([sys.executable, "-c", "import sys, vl_adapters; "
                            f"print([m for m in {HEAVY!r} if m in sys.modules])"],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"python {sys.version.split()[0]}, {args.runs} alternating pairs, fresh interpreters")
    print(f"import torch        median {statistics.median(torch_s):.3f} s  (min {min(torch_s):.3f}, max {max(torch_s):.3f})")
    print(f"import vl_adapters  median {statistics.median(package_s):.3f} s  (min {min(package_s):.3f}, "
          f"max {max(package_s):.3f})")
    print(f"difference (paired) median {statistics.median(differences):+.3f} s  (target: under 0.5 s)")
    print(f"optional libraries imported by `import vl_adapters`: {check.stdout.strip()}")
    print(f"printed on stderr by `import vl_adapters`: {sorted(printed) or 'nothing'}")


if __name__ == "__main__":
    main()
