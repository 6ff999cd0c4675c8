"""The numbers a user wants, from one run of the whole pipeline (collective -> learngene -> Hub -> few-shot).

Runs :func:`learngene_hf.pipeline.run_pipeline` (the README's first command, with more shot
settings) and writes benchmarks/results/pipeline.{json,md}:

* accuracy, mean +/- 95% CI over the episodes, of the learngene, scratch and the --compare blocks
  at every K, with the paired difference to scratch (every lr picked on open-world classes);
* learngene size: parameters and bytes vs the collective model and vs an individual model;
* collective training throughput (images/s) and few-shot wall time per episode and method;
* Hub push / pull time and bytes against the local Hub server;
* the machine (CPU / GPU name, torch version).

    python benchmarks/pipeline_benchmark.py                 # 5, 10 and 20 shots, 20 episodes each
    accelerate launch benchmarks/pipeline_benchmark.py      # on GPUs (mixed precision "auto")
    python benchmarks/pipeline_benchmark.py --shots 5 --episodes 5 --output-dir /tmp/quick
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.pipeline import PipelineConfig, parse_int_list, run_pipeline, without_episodes

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, str | int]:
    """Where the numbers were measured."""
    info: dict[str, str | int] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def size_rows(summary: dict) -> list[tuple[str, int, float]]:
    """(what, parameters, share of the collective model) for the size table."""
    sizes = summary["learngene"]["sizes"]
    first = next(iter(summary["few_shot"].values()))["methods"]
    individual = first["learngene"]["parameters"]
    collective = sizes["collective_parameters"]
    return [
        ("learngene", sizes["learngene_parameters"], sizes["learngene_parameters"] / collective),
        ("individual model (5-way)", individual, individual / collective),
        ("collective model", collective, 1.0),
    ]


def markdown(summary: dict, info: dict) -> str:
    from learngene_hf.fewshot import format_table

    sizes = summary["learngene"]["sizes"]
    hub = summary["hub"] or {}
    device = info.get("gpu") or f"CPU ({info['cpu_count']} cores, {info['torch_threads']} torch threads)"
    lines = [
        f"Pipeline benchmark on {device}, torch {info['torch']}, {summary['processes']} process(es).",
        "",
        f"Learngene: layers {summary['learngene']['layers']} ({summary['learngene']['position']}). "
        f"{summary['learngene']['reason']}",
        "",
        "| model | parameters | share of the collective model |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {what} | {n:,} | {100 * share:.1f}% |" for what, n, share in size_rows(summary)]
    lines += [
        "",
        f"Learngene file bytes (tensors incl. BatchNorm buffers): {sizes['learngene_bytes']:,} vs "
        f"{sizes['collective_bytes']:,} for the collective model's state dict.",
        "",
        "| timing | value |",
        "| --- | ---: |",
        f"| collective training throughput | {summary['collective']['images_per_second']:.0f} images/s |",
        f"| collective training (whole stream) | {summary['seconds']['collective']:.0f} s |",
        f"| learngene selection (open-world probes) | {summary['seconds']['selection']:.0f} s |",
        f"| few-shot stage (all K, lr tuning included) | {summary['seconds']['few_shot']:.0f} s |",
    ]
    for shots, result in summary["few_shot"].items():
        per_run = result.get("seconds_per_run")
        if per_run:
            lines.append(f"| few-shot, {shots}-shot: one model trained + evaluated | {per_run:.2f} s |")
    if hub:
        lines += [
            f"| Hub push (local server) | {hub['push_seconds']:.2f} s |",
            f"| Hub pull by commit sha | {hub['pull_seconds']:.2f} s |",
            f"| Hub repo bytes (safetensors + config + card) | {hub['repo_bytes']:,} |",
        ]
    for shots, result in summary["few_shot"].items():
        lines += ["", format_table(result)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", default="5,10,20", help="K values (default 5,10,20)")
    p.add_argument("--episodes", type=int, default=20, help="novel-class episodes per K (default 20)")
    p.add_argument("--output-dir", default="runs/benchmark", help="pipeline outputs (default runs/benchmark)")
    p.add_argument("--results", default=str(RESULTS), help="where pipeline.json / pipeline.md go")
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cfg = PipelineConfig(output_dir=args.output_dir, shots=parse_int_list(args.shots), episodes=args.episodes,
                         preset=args.preset, seed=args.seed)
    summary = run_pipeline(cfg, log=lambda *a, **k: None)
    if summary["processes"] > 1 and not _is_main():
        return
    info = machine()
    slim = dict(without_episodes(summary), machine=info)
    out = Path(args.results)
    write_json_atomic(out / "pipeline.json", slim)
    text = markdown(summary, info)
    write_text_atomic(out / "pipeline.md", text)
    print(text)


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


if __name__ == "__main__":
    main()
