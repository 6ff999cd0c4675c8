"""Wall time of importing the package: light entry points vs the model families.

Each command runs in a fresh interpreter, alternating between the commands in several rounds so
that background load hits them alike; the median per command is reported. Writes
benchmarks/results/import_time.{json,md}.

    python benchmarks/import_time.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from learngene_hf.io import write_json_atomic, write_text_atomic

COMMANDS = {
    "import learngene_hf.errors": [sys.executable, "-c", "import learngene_hf.errors"],
    "import learngene_hf": [sys.executable, "-c", "import learngene_hf"],
    "python -m learngene_hf.testing.hub --help": [sys.executable, "-m", "learngene_hf.testing.hub", "--help"],
    "from learngene_hf import CollectiveModel (torch, timm, transformers)": [
        sys.executable,
        "-c",
        "from learngene_hf import CollectiveModel",
    ],
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    result = {
        "rounds": args.rounds,
        "median_seconds": {name: statistics.median(v) for name, v in seconds.items()},
        "all_seconds": seconds,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    lines = ["| command | median wall time (s) |", "| --- | --- |"]
    lines += [f"| `{name}` | {value:.2f} |" for name, value in result["median_seconds"].items()]
    out = Path(args.output_dir)
    write_json_atomic(out / "import_time.json", result)
    write_text_atomic(out / "import_time.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
