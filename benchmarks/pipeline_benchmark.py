"""The numbers a user wants, from one run of the whole pipeline (collective -> learngene -> Hub -> few-shot).

Runs :func:`learngene_hf.pipeline.run_pipeline` (the README's first command, with more shot
settings) and writes benchmarks/results/pipeline.{json,md}:

* accuracy, mean +/- 95% CI over >= 100 paired episodes, of the learngene descendant (default
  recipe), scratch (the same recipe), the --compare blocks and baselines at every K, with the
  paired differences to scratch and to the strongest method that inherits nothing (every
  method's recipe values tuned on open-world classes; values at the edge of their grid flagged);
* a reading against the project's targets (+10 points over the strongest method that inherits
  nothing, CI above zero; the linear classifier on the whole collective model's features);
* learngene size: parameters and bytes vs the collective model and vs an individual model;
* collective training throughput (images/s) and few-shot wall time per episode and method;
* Hub push / pull time and bytes against the local Hub server;
* the machine (CPU / GPU name, torch version).

    python benchmarks/pipeline_benchmark.py                 # 5 and 10 shots, 100 episodes each
    accelerate launch benchmarks/pipeline_benchmark.py      # on GPUs (mixed precision "auto")
    python benchmarks/pipeline_benchmark.py --shots 5 --episodes 5 --output-dir /tmp/quick

The pipeline resumes: with --output-dir pointing at a finished run, the collective model is not
trained again (its timings are then those of the first run, from its report).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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
    from learngene_hf.fewshot.compare import format_table

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
        "| collective training (whole stream, training steps only) | "
        f"{_seconds(summary['collective'].get('training_seconds'))} |",
        "| collective stage of this run (less when it resumed a finished run) | "
        f"{summary['seconds']['collective']:.0f} s |",
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
    for result in summary["few_shot"].values():
        lines += ["", format_table(result)]
    lines += ["", *target_lines(summary)]
    return "\n".join(lines) + "\n"


def _pm(diff: dict) -> str:
    half = diff.get("ci95")
    return f"{100 * diff['mean']:+.1f} +/- {100 * half:.1f}" if half is not None else f"{100 * diff['mean']:+.1f}"


def target_lines(summary: dict) -> list[str]:
    """The results read against the project's targets, one line per shot setting and target."""
    from learngene_hf.stats import paired_difference

    sizes = summary["learngene"]["sizes"]
    lines = ["Against the targets:", ""]
    for shots, result in summary["few_shot"].items():
        methods = result["methods"]
        lg = methods.get("learngene")
        best = result.get("strongest_baseline")
        if lg is None or not best:
            lines.append(f"- {shots}-shot: no learngene row or no method that inherits nothing; nothing to read.")
            continue
        d = lg["diff_vs_strongest_baseline"]
        low = d["mean"] - (d["ci95"] or 0.0)
        verdict = (
            "met"
            if d["mean"] >= 0.10 and low > 0
            else (
                f"missed by {100 * (0.10 - d['mean']):.1f} points"
                if d["mean"] < 0.10
                else "missed: the CI reaches zero"
            )
        )
        lines.append(
            f"- {shots}-shot, +10 points over the strongest method that inherits nothing "
            f"({best['name']}, {100 * best['mean']:.1f}%): learngene {100 * lg['mean']:.1f}%, "
            f"{_pm(d)} points, CI {'above' if low > 0 else 'not above'} zero: {verdict}."
        )
        whole = methods.get("logreg_collective")
        if whole is not None:
            w_mean, w_half = paired_difference(lg["accuracies"], whole["accuracies"])
            within = w_mean >= 0 or (w_half == w_half and abs(w_mean) <= w_half)
            lines.append(
                f"- {shots}-shot, moonshot (match the linear classifier on the whole collective model, "
                f"inheriting {100 * sizes['parameter_fraction']:.1f}% of its parameters, "
                f"{'within' if sizes['parameter_fraction'] <= 0.05 else 'over'} the 5% allowed): "
                f"{_pm({'mean': w_mean, 'ci95': w_half if w_half == w_half else None})} points vs "
                f"{100 * whole['mean']:.1f}%: {'met' if within and sizes['parameter_fraction'] <= 0.05 else 'missed'}."
            )
    return lines


def _seconds(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.0f} s"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", default="5,10", help="K values (default 5,10)")
    p.add_argument("--episodes", type=int, default=100, help="novel-class episodes per K (default 100)")
    p.add_argument("--tune-episodes", type=int, default=16, help="open-world episodes per grid point (default 16)")
    p.add_argument(
        "--lr-grid",
        default="0.02,0.05,0.1,0.2",
        help="learning rates tuned per method (default 0.02,0.05,0.1,0.2; widened once at an edge)",
    )
    p.add_argument("--steps-grid", default=None, help="also tune the steps, e.g. 50,100 (default: not tuned)")
    p.add_argument("--recipe", default="default", choices=["default", "paper"])
    p.add_argument(
        "--no-compare",
        action="store_true",
        help="skip the baselines and the whole / last-k / first-k / worst-k blocks and weight selection",
    )
    p.add_argument("--output-dir", default="runs/benchmark", help="pipeline outputs (default runs/benchmark)")
    p.add_argument("--results", default=str(RESULTS), help="where pipeline.json / pipeline.md go")
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stack", action="store_true", help="train the few-shot descendants one at a time")
    p.add_argument("--stack-size", type=int, default=64, help="descendants per stack (default 64)")
    args = p.parse_args(argv)

    extra = {
        "recipe": args.recipe,
        "compare": not args.no_compare,
        "compare_blocks": not args.no_compare,
        "stack": not args.no_stack,
    }
    if args.stack_size:
        extra["stack_size"] = args.stack_size
    if args.tune_episodes:
        extra["tune_episodes"] = args.tune_episodes
    if args.lr_grid:
        extra["lr_grid"] = [float(x) for x in args.lr_grid.split(",")]
    if args.steps_grid:
        extra["steps_grid"] = parse_int_list(args.steps_grid)
    cfg = PipelineConfig(
        output_dir=args.output_dir,
        shots=parse_int_list(args.shots),
        episodes=args.episodes,
        preset=args.preset,
        seed=args.seed,
        **extra,
    )
    summary = run_pipeline(cfg, log=lambda *a, **k: None)
    if summary["processes"] > 1 and not _is_main():
        return
    info = machine()
    slim = dict(without_episodes(summary), machine=info)
    out = Path(args.results)
    write_json_atomic(out / "pipeline.json", slim)
    text = markdown(summary, info)
    write_text_atomic(out / "pipeline.md", text)
    for shots in summary["few_shot"]:  # the per-K plots, next to the tables
        plot = Path(args.output_dir) / f"few_shot_{shots}shot" / "accuracy.png"
        if plot.is_file():
            shutil.copyfile(plot, out / f"accuracy_{shots}shot.png")
    print(text)


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


if __name__ == "__main__":
    main()
