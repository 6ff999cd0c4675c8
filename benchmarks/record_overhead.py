"""Training throughput of the collective training loop with the gradient record on vs off.

The same loop (forward, backward, optional GradientRecorder.step, SGD step) runs on the same
batches, alternating off/on in several rounds so that background load hits both alike; the
recorder's per-epoch host sync is included. Writes benchmarks/results/record_overhead.{json,md}.

    python benchmarks/record_overhead.py [--preset small] [--batches 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from learngene_hf import CollectiveConfig, CollectiveModel
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.training.config import DEFAULT_THRESHOLDS
from learngene_hf.training.record import GradientRecorder


def run_loop(model: CollectiveModel, batches, record: bool) -> float:
    """Images per second of one pass over ``batches`` ([(x [B,3,H,W], y [B])])."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    recorder = GradientRecorder(model, DEFAULT_THRESHOLDS) if record else None
    if recorder is not None:
        recorder.begin_task(0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches:
        loss = model(pixel_values=x, labels=y, task_id=0).loss
        loss.backward()
        if recorder is not None:
            recorder.step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if recorder is not None:
        recorder.end_epoch(0, 0)
        recorder.end_task(0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "record_overhead"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset=args.preset)).to(device)
    model.add_task(5)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(args.batch_size, 3, 32, 32, generator=gen).to(device),
            torch.randint(0, 5, (args.batch_size,), generator=gen).to(device),
        )
        for _ in range(args.batches)
    ]
    run_loop(model, batches[:3], True)  # warm-up
    off, on = [], []
    for _ in range(args.rounds):
        off.append(run_loop(model, batches, False))
        on.append(run_loop(model, batches, True))
    ratio = sum(on) / sum(off)
    result = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "batches": args.batches,
        "rounds": args.rounds,
        "images_per_second_off": off,
        "images_per_second_on": on,
        "ratio_on_over_off": ratio,
        "thresholds": list(DEFAULT_THRESHOLDS),
    }
    write_json_atomic(args.out + ".json", result)
    write_text_atomic(
        args.out + ".md",
        "\n".join(
            [
                "| preset | device | record off (img/s) | record on (img/s) | on / off |",
                "| --- | --- | ---: | ---: | ---: |",
                f"| {args.preset} | {result['device']} ({result['threads']} threads) | {sum(off) / len(off):.1f} | "
                f"{sum(on) / len(on):.1f} | {ratio:.3f} |",
                "",
            ]
        ),
    )
    print(result)


if __name__ == "__main__":
    main()
