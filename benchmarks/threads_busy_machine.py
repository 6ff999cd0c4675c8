"""Collective-training throughput with 1 torch thread vs torch's default, while other work holds cores.

On a machine whose cores are shared, torch's default thread count (one per core) oversubscribes
them. This runs the same short collective training (``examples/train_collective.py``, preset
"small", one task) in fresh processes with ``OMP_NUM_THREADS=1`` and with the default, alternating
in several rounds, while ``--busy`` pure-Python processes each keep one core busy, and reports
the training images/s of each. Writes benchmarks/results/threads_busy_machine.{json,md}.

    python benchmarks/threads_busy_machine.py [--busy 1] [--rounds 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spin(stop) -> None:  # noqa: ANN001 - a multiprocessing.Event
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def train_once(threads: int | None, epochs: int, out: Path) -> float:
    """Images/s of one short training run in a fresh process (``threads=None``: torch's default)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [
        sys.executable,
        str(REPO / "examples" / "train_collective.py"),
        "--preset",
        "small",
        "--num-tasks",
        "1",
        "--epochs-per-task",
        str(epochs),
        "--no-progress",
        "--no-resume",
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return float(json.loads((out / "report.json").read_text())["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=1, help="pure-Python processes keeping a core busy (default 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the one training task (default 2)")
    args = parser.parse_args()

    import torch

    default_threads = torch.get_num_threads()
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    results: dict[str, list[float]] = {"1": [], "default": []}
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for key, threads in (("1", 1), ("default", None)):
                    results[key].append(train_once(threads, args.epochs, Path(tmp) / f"{key}_{r}"))
                    print(f"round {r + 1}: threads={key}: {results[key][-1]:.0f} images/s", flush=True)
    finally:
        stop.set()
        for p in spinners:
            p.join(timeout=10)
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    summary = {
        "cpu_count": os.cpu_count(),
        "default_threads": default_threads,
        "busy_processes": args.busy,
        "load_average_at_start": load_before,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "images_per_second": results,
        "mean_images_per_second": mean,
        "speedup_one_thread": mean["1"] / mean["default"],
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = REPO / "benchmarks" / "results"
    from learngene_hf.io import write_json_atomic, write_text_atomic

    write_json_atomic(out / "threads_busy_machine.json", summary)
    md = "\n".join(
        [
            f"Collective training (preset small, 1 task, {args.epochs} epochs) on {os.cpu_count()} cores with "
            f"{args.busy} "
            f"busy process(es); load average {load_before:.1f} at the start; torch {torch.__version__}.",
            "",
            "| torch threads | images/s (per round) | mean |",
            "| --- | --- | ---: |",
            *[
                f"| {'1 (OMP_NUM_THREADS=1)' if k == '1' else f'{default_threads} (default)'} | "
                f"{', '.join(f'{v:.0f}' for v in results[k])} | {mean[k]:.0f} |"
                for k in ("1", "default")
            ],
            "",
            f"One thread is {summary['speedup_one_thread']:.2f}x the default's throughput.",
            "",
        ]
    )
    write_text_atomic(out / "threads_busy_machine.md", md)
    print(md)


if __name__ == "__main__":
    main()
