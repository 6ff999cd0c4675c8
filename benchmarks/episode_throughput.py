"""Few-shot descendants trained and evaluated per second: one at a time vs stacked, side by side.

The pipeline's learngene setting (small preset grown to widths 32-32-64-128-256-256, learngene =
its first three layers, 5-way episodes with 15 queries per class, the default few-shot recipe,
optionally shortened with --steps / --lp-steps / --warmup-steps): the ``learngene`` and
``scratch`` descendants of the same episodes are trained and scored with ``FewShotConfig(stack=
False)`` and with the stacked engine (``learngene_hf.fewshot.stacked``), at each shot count, in one
process, the order of the two paths alternating between rounds and shot counts so that
background load hits both alike. The per-episode accuracies of both paths are compared (float32:
they may differ by a query image). A short torch.profiler run of each path says where the time
goes (``profile`` in the JSON), and the FLOPs it counts, divided by its wall time, against a large
matmul's rate say how close each path is to the machine's arithmetic ceiling.

Writes benchmarks/results/episode_throughput.{json,md}; per shot count the JSON holds both rates
(descendants per second), their ratio under ``speedup`` and the accuracy check.

    python benchmarks/episode_throughput.py                       # 5, 10, 20 shots, default recipe
    python benchmarks/episode_throughput.py --shots 5 --episodes 4 --steps 20 --lp-steps 4 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from pathlib import Path

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.methods import comparison_methods
from learngene_hf.fewshot.runner import run_episodes
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.models.collective import CollectiveConfig, CollectiveModel

RESULTS = Path(__file__).resolve().parent / "results" / "episode_throughput"
#: The grown small-preset collective model of the pipeline benchmark (benchmarks/results/pipeline.md).
WIDTHS = [32, 32, 64, 128, 256, 256]
#: Its pooling (the small preset's; given widths without pool flags mean "no pooling").
POOL = [False, True, False, True, False, True]


def machine() -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def learngene_of_the_pipeline() -> Learngene:
    """A learngene shaped like the pipeline's (first 3 layers of the grown small preset); random
    weights: throughput does not depend on them."""
    torch.manual_seed(0)
    model = CollectiveModel(CollectiveConfig(preset="small", widths=WIDTHS, pool=POOL, task_num_labels=[5]))
    return Learngene.from_collective(
        model, [0, 1, 2], preprocessing={"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    )


def autocast(device: str, mixed_precision: str):
    """bf16 autocast on ``device`` for ``"bf16"``, nothing for ``"no"``."""
    if mixed_precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(methods, episodes, cfg: FewShotConfig) -> tuple[float, list[dict]]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    rows = run_episodes(methods, episodes, cfg, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", default="5,10,20")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per shot count and round (x2 methods)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds per shot count (the order of the paths alternates)"
    )
    parser.add_argument("--steps", type=int, default=None, help="recipe steps (default: the default recipe's)")
    parser.add_argument("--lp-steps", type=int, default=None, help="recipe LP-FT steps (default: the recipe's)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="recipe warm-up steps (default: the recipe's)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile of one short run per path")
    parser.add_argument("--stack-size", type=int, default=FewShotConfig.stack_size)
    parser.add_argument(
        "--mixed-precision",
        default="no",
        choices=["no", "bf16"],
        help="run both paths under torch.autocast in bf16 (GPUs; what accelerate's 'auto' picks there)",
    )
    parser.add_argument("--out", default=str(RESULTS), help="output path without extension")
    parser.add_argument("--note", default="", help="a line about the machine's state (e.g. shared with other jobs)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    learngene = learngene_of_the_pipeline()
    methods = comparison_methods(learngene)  # learngene + scratch, same architecture
    data, _ = load_tensors(None, num_classes=20, train_per_class=60, test_per_class=1, image_size=32)
    overrides = {
        k: v
        for k, v in (("steps", args.steps), ("lp_steps", args.lp_steps), ("warmup_steps", args.warmup_steps))
        if v is not None
    }
    base = FewShotConfig.from_recipe("default", device=device, stack_size=args.stack_size, **overrides)
    results: dict = {
        "machine": machine(),
        "note": args.note,
        "config": base.to_dict(),
        "mixed_precision": args.mixed_precision,
        "methods": [m.name for m in methods],
        "rounds": args.rounds,
        "shots": {},
    }
    turn = 0
    for shots in [int(s) for s in args.shots.split(",")]:
        seconds = {"one_at_a_time": 0.0, "stacked": 0.0}
        count, worst = 0, 0.0
        sums = {"one_at_a_time": 0.0, "stacked": 0.0}  # accuracies, for the mean of each path
        for r in range(args.rounds):
            episodes = sample_episodes(data, list(range(20)), args.episodes, 5, shots, 15, seed=1000 * shots + r)
            runs = {}
            order = ("one_at_a_time", "stacked") if turn % 2 == 0 else ("stacked", "one_at_a_time")
            turn += 1
            for path in order:
                cfg = FewShotConfig(**{**base.to_dict(), "stack": path == "stacked"})
                with autocast(device, args.mixed_precision):
                    elapsed, rows = timed(methods, episodes, cfg)
                seconds[path] += elapsed
                runs[path] = rows
                print(f"{shots}-shot round {r}: {path} {elapsed:.1f} s", flush=True)
            count += len(episodes) * len(methods)
            for a, b in zip(runs["one_at_a_time"], runs["stacked"]):
                worst = max(worst, *(abs(a["accuracy"][m] - b["accuracy"][m]) for m in a["accuracy"]))
                for path, row in (("one_at_a_time", a), ("stacked", b)):
                    sums[path] += sum(row["accuracy"].values())
        entry = {
            "descendants": count,
            "seconds": seconds,
            "one_at_a_time_per_s": count / seconds["one_at_a_time"],
            "stacked_per_s": count / seconds["stacked"],
            "max_accuracy_difference": worst,
            "query_images_per_episode": 75,
            "mean_accuracy": {path: total / count for path, total in sums.items()},
        }
        entry["speedup"] = entry["stacked_per_s"] / entry["one_at_a_time_per_s"]
        results["shots"][str(shots)] = entry
        print(
            f"{shots}-shot: {entry['one_at_a_time_per_s']:.3f} vs {entry['stacked_per_s']:.3f} descendants/s, "
            f"speedup {entry['speedup']:.2f}x, largest accuracy difference {worst:.4f}",
            flush=True,
        )
        write(results, Path(args.out))  # after every shot count: a long run that is cut short keeps what it measured
    if not args.no_profile:
        results["profile"] = profile(methods, data, base, shots=int(args.shots.split(",")[0]), episodes=args.episodes)
    write(results, Path(args.out))
    print(markdown(results))
    return results


def write(results: dict, out: Path) -> None:
    write_json_atomic(out.with_suffix(".json"), results)
    write_text_atomic(out.with_suffix(".md"), markdown(results))


def matmul_peak_gflops(size: int = 2048, seconds: float = 1.0) -> float:
    """This machine's float32 arithmetic ceiling in practice: GFLOP/s of a ``size`` x ``size`` matmul."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def profile(methods, data, base: FewShotConfig, shots: int, episodes: int, steps: int = 6) -> dict:
    """Share of the self CPU time of the top operators in a short run (``steps`` steps) of each path,
    and the arithmetic rate of each path (FLOPs counted by ``torch.utils.flop_counter`` in one run,
    divided by the wall time of another) against the machine's matmul peak."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from torch.utils.flop_counter import FlopCounterMode

    eps = sample_episodes(data, list(range(20)), episodes, 5, shots, 15, seed=7)
    short = FewShotConfig(
        **{
            **base.to_dict(),
            "steps": steps,
            "epochs": None,
            "lp_steps": min(base.lp_steps, steps // 3),
            "warmup_steps": min(base.warmup_steps, 1),
        }
    )
    out = {
        "shots": shots,
        "steps": steps,
        "descendants": len(eps) * len(methods),
        "matmul_peak_gflops": matmul_peak_gflops(),
    }
    # Both paths do the same arithmetic; it is counted on the one-at-a-time path because the counter
    # (torch 2.14) books a grouped convolution's weight gradient N times over (batch = N*C there).
    with FlopCounterMode(display=False) as counter:
        run_episodes(methods, eps, FewShotConfig(**{**short.to_dict(), "stack": False}), progress=False)
    gflop = counter.get_total_flops() / 1e9
    for path in ("one_at_a_time", "stacked"):
        cfg = FewShotConfig(**{**short.to_dict(), "stack": path == "stacked"})
        elapsed, _ = timed(methods, eps, cfg)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run_episodes(methods, eps, cfg, progress=False)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        out[path] = {
            "seconds": total / 1e6,
            "top": [{"op": e.key, "share": e.self_cpu_time_total / total} for e in top],
            "gflop": gflop,
            "wall_seconds": elapsed,
            "gflops_per_s": gflop / elapsed,
        }
    return out


def markdown(results: dict) -> str:
    info = results["machine"]
    where = info.get("gpu") or f"{info['cpu']} CPU, {info['cpu_count']} cores, {info['torch_threads']} torch threads"
    c = results["config"]
    lines = [
        f"Few-shot descendants trained + evaluated per second on {where}, torch {info['torch']} "
        f"(5-way, 15 queries per class, methods {', '.join(results['methods'])}; recipe {c.get('recipe')} with "
        f"{c.get('steps')} steps ({c.get('lp_steps')} LP-FT), batch {c['batch_size']}; stacks of at most "
        f"{c['stack_size']}; {results['rounds']} round(s) per shot count; mixed precision "
        f"{results.get('mixed_precision', 'no')}).",
        "",
    ]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += [
        "| shots | one at a time (/s) | stacked (/s) | speedup | largest accuracy difference | mean accuracy (one at a "
        "time / stacked) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for shots, e in results["shots"].items():
        means = e.get("mean_accuracy")
        both = f"{100 * means['one_at_a_time']:.1f}% / {100 * means['stacked']:.1f}%" if means else "not recorded"
        lines.append(
            f"| {shots} | {e['one_at_a_time_per_s']:.3f} | {e['stacked_per_s']:.3f} | {e['speedup']:.2f}x | "
            f"{100 * e['max_accuracy_difference']:.1f} points | {both} |"
        )
    prof = results.get("profile")
    if prof:
        lines += [
            "",
            f"Where the time goes ({prof['shots']}-shot, {prof['steps']} steps, {prof['descendants']} descendants, "
            "share of self CPU time):",
            "",
        ]
        for path in ("one_at_a_time", "stacked"):
            tops = ", ".join(f"{t['op']} {100 * t['share']:.0f}%" for t in prof[path]["top"][:5])
            lines.append(f"- {path.replace('_', ' ')} ({prof[path]['seconds']:.1f} s): {tops}")
        if "matmul_peak_gflops" in prof:
            peak, alone, stacked = (
                prof["matmul_peak_gflops"],
                prof["one_at_a_time"]["gflops_per_s"],
                prof["stacked"]["gflops_per_s"],
            )
            lines += [
                "",
                f"Arithmetic rate of that run: one at a time {alone:.1f} GFLOP/s, stacked {stacked:.1f} GFLOP/s "
                f"({prof['one_at_a_time']['gflop'] / prof['descendants']:.1f} GFLOP per descendant); a float32 "
                f"2048x2048 matmul reaches {peak:.1f} GFLOP/s here. One at a time already runs at "
                f"{100 * alone / peak:.0f}% of that ceiling, so no way of batching the same arithmetic can make "
                f"it more than {peak / alone:.1f}x faster on this machine.",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
