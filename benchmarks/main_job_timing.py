"""Where the main job's time goes: ``examples/run_pipeline.py`` with its defaults, stage by stage.

    python benchmarks/main_job_timing.py                     # the main job in runs/main_job_timing
    python benchmarks/main_job_timing.py --reuse runs/pipeline   # time nothing: read a finished run

Runs the pipeline (collective model, learngene selection, Hub round trip, few-shot comparison) in
this process with its default settings, and writes the seconds of every stage, the collective
loop's images/s and GFLOP/s (forward + backward arithmetic counted with ``torch.utils.flop_counter``)
against a float32 matmul's rate measured in the same run (before and after the job, to see the
machine drift), with the machine named: ``benchmarks/results/main_job_timing.{json,md}``. With
``--reuse`` it reads a pipeline folder's ``summary.json`` instead (the matmul rate is then only
today's).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from learngene_hf.io import read_json, write_json_atomic, write_text_atomic
from learngene_hf.machine import machine_record

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_gflops(size: int = 2048, seconds: float = 3.0) -> float:
    """This machine's float32 arithmetic rate in practice: GFLOP/s of a ``size`` x ``size`` matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def run_main_job(output_dir: Path) -> tuple[dict[str, Any], float]:
    """The pipeline with its defaults (what ``python examples/run_pipeline.py`` runs); ``(summary, wall s)``."""
    import learngene_hf
    from learngene_hf.pipeline import PipelineConfig, run_pipeline

    learngene_hf.import_models()
    start = time.perf_counter()
    summary = run_pipeline(PipelineConfig(output_dir=str(output_dir)), progress=False, log=print)
    return summary, time.perf_counter() - start


def record(summary: dict[str, Any], wall: float | None, rates: list[float], note: str) -> dict[str, Any]:
    collective = summary["collective"]
    report = read_json(Path(collective["run_dir"]) / "report.json")
    seconds = dict(summary["seconds"])
    hub = summary.get("hub") or {}
    seconds["hub"] = (hub.get("push_seconds") or 0.0) + (hub.get("pull_seconds") or 0.0)
    gflops = report.get("gflops_per_second")
    return {
        "machine": machine_record(),
        "note": note,
        "wall_seconds": wall,
        "stage_seconds": seconds,
        "collective": {
            "preset": collective["preset"],
            "train_seconds": report.get("train_seconds"),
            "images_per_second": report.get("images_per_second"),
            "train_gflop": report.get("train_gflop"),
            "gflops_per_second": gflops,
            "matmul_gflops": rates,
            "fraction_of_matmul": gflops / max(rates) if gflops else None,
            "mean_forgetting": report.get("mean_forgetting"),
        },
        "few_shot": {
            shots: {
                "strongest": r.get("strongest_baseline", {}).get("name"),
                "learngene": r["methods"]["learngene"]["mean"],
                "gain_vs_strongest": r["methods"]["learngene"].get("diff_vs_strongest_baseline"),
            }
            for shots, r in summary["few_shot"].items()
        },
    }


def markdown(r: dict[str, Any]) -> str:
    c, s = r["collective"], r["stage_seconds"]
    rates = ", ".join(f"{x:.0f}" for x in c["matmul_gflops"])
    lines = [
        "# The main job's time, stage by stage",
        "",
        f"`python examples/run_pipeline.py` with its defaults on {r['machine']['device_name']} "
        f"({r['machine']['torch_threads']} torch threads). {r['note']}".rstrip(),
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        f"| collective model ({c['preset']} preset, training and evaluation) | {s['collective']:.0f} |",
        f"| learngene selection (distillation, open-world probes) and saving | {s['selection']:.0f} |",
        f"| Hub push and pull | {s['hub']:.1f} |",
        f"| few-shot comparison | {s['few_shot']:.0f} |",
    ]
    if r["wall_seconds"] is not None:
        lines.append(f"| **whole job** | **{r['wall_seconds']:.0f}** ({r['wall_seconds'] / 60:.1f} min) |")
    lines += [
        "",
        f"Collective loop: {c['train_seconds']:.0f} s of training steps, {c['images_per_second']:.0f} images/s, "
        f"{c['train_gflop']:.0f} GFLOP at {c['gflops_per_second']:.0f} GFLOP/s = "
        f"{100 * c['fraction_of_matmul']:.0f}% of the float32 matmul rate measured in this run ({rates} GFLOP/s).",
    ]
    for shots, f in r["few_shot"].items():
        gain = f["gain_vs_strongest"] or {}
        lines.append(
            f"Few-shot {shots}-shot: learngene {100 * f['learngene']:.1f}%, {100 * gain.get('mean', 0):+.1f} +/- "
            f"{100 * (gain.get('ci95') or 0):.1f} points against {f['strongest']}, the strongest method that "
            "inherits nothing."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/main_job_timing"))
    parser.add_argument("--reuse", type=Path, default=None, help="a finished pipeline folder to read instead")
    parser.add_argument("--note", default="", help="machine load or other remarks for the results")
    args = parser.parse_args()
    rates = [matmul_gflops()]
    if args.reuse is not None:
        summary, wall = read_json(args.reuse / "summary.json"), None
    else:
        if (args.output_dir / "collective").exists():
            parser.error(f"{args.output_dir} holds an earlier run (the job would resume it); remove it or pass --reuse")
        summary, wall = run_main_job(args.output_dir)
        rates.append(matmul_gflops())
    result = record(summary, wall, rates, args.note or f"{os.cpu_count()} cores")
    write_json_atomic(RESULTS / "main_job_timing.json", result)
    write_text_atomic(RESULTS / "main_job_timing.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
