"""Descendants of several sizes and the practitioner's baselines, on the embedded data and on
scikit-learn's real digits.

    python benchmarks/descendant_sizes.py                        # trains the collective model if needed
    python benchmarks/descendant_sizes.py --run-dir runs/pipeline --episodes 100

1. Collective model and learngene: reused from ``RUN_DIR/collective`` and ``RUN_DIR/learngene``
   (``examples/run_pipeline.py`` writes them); when missing they are made the pipeline's way
   (small preset on the embedded data, validated selection), or quicker with ``--num-tasks``,
   ``--epochs-per-task``, ``--images-per-class`` and ``--layers`` (an explicit learngene).
2. Size sweep (embedded data, novel classes, 5-way 5-shot): the learngene with 0, 1 and all fresh
   blocks after it, each next to scratch and weight selection of that size, plus logistic
   regression and nearest centroid on frozen features of a random descendant, the learngene and
   the whole collective model, all on the same episodes. Learning rates and the L2 strength are
   picked on open-world episodes.
3. Digits row: the same learngene (trained on the embedded data, so a change of domain) on
   scikit-learn's handwritten digits, novel classes 7-9 (3-way 5-shot), against scratch, weight
   selection and the frozen-feature baselines; tuning on the digits' open-world classes 4-6.

Writes ``benchmarks/results/descendant_sizes.{json,md,png}`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import sample_episodes
from learngene_hf.fewshot.baselines import DEFAULT_L2_GRID
from learngene_hf.fewshot.compare import compare_methods, format_sizes_table, format_table, size_rows
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.loading import load_fewshot_data
from learngene_hf.fewshot.methods import baseline_methods, comparison_methods, size_methods
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.plots.sizes import plot_descendant_sizes
from learngene_hf.training.run import load_run

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/pipeline", help="folder with collective/ and learngene/")
    parser.add_argument("--episodes", type=int, default=100, help="novel-class episodes per setting")
    parser.add_argument("--tune-episodes", type=int, default=4, help="open-world episodes per tried value")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--lr-grid", default="0.01,0.02,0.05")
    parser.add_argument("--digits-ways", type=int, default=3)
    parser.add_argument(
        "--digits-episodes", type=int, default=None, help="episodes of the digits row (default: --episodes)"
    )
    parser.add_argument(
        "--digits-weight-selection",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include weight selection in the digits row",
    )
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "descendant_sizes"), help="path prefix of the outputs")
    parser.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("collective run, when RUN_DIR has none (default: the pipeline's)")
    run.add_argument("--num-tasks", type=int, default=None)
    run.add_argument("--epochs-per-task", type=int, default=None)
    run.add_argument("--images-per-class", type=int, default=None)
    run.add_argument(
        "--layers", default=None, help="explicit learngene layers, e.g. '0,1,2' (default: validated selection)"
    )
    return parser.parse_args()


def ensure_run(
    run_dir: Path, seed: int, layers: list[int] | None = None, **training: int | None
) -> tuple[Learngene, torch.nn.Module, dict]:
    """The learngene and collective model of ``run_dir``, made the pipeline's way when missing
    (``training``: ``num_tasks``, ``epochs_per_task``, ``train_per_class`` overrides; ``layers``:
    an explicit learngene instead of the validated selection)."""
    made = {}
    if not (run_dir / "collective").is_dir() or not (run_dir / "learngene" / "learngene.safetensors").is_file():
        from learngene_hf.selection.inheritor import Inheritor
        from learngene_hf.training.config import CollectiveTrainingConfig
        from learngene_hf.training.trainer import train_collective

        start = time.perf_counter()
        train_collective(
            CollectiveTrainingConfig.for_preset("small", seed=seed, **training), run_dir / "collective", resume=True
        )
        from learngene_hf.fewshot.runner import learngene_probe

        inheritor = Inheritor.from_run(run_dir / "collective", probe=learngene_probe)
        if layers:
            inheritor.select("validated", k=len(layers), layers=layers, seed=seed, device="cpu")
        else:
            inheritor.select("validated", k=3, seed=seed, device="cpu")
        inheritor.save_pretrained(run_dir / "learngene")
        made = {"seconds": time.perf_counter() - start, "layers": layers, **{k: v for k, v in training.items() if v}}
    learngene = Learngene.from_pretrained(run_dir / "learngene")
    return learngene, load_run(run_dir / "collective").model, made


def main() -> None:
    args = parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    run_dir = Path(args.run_dir)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    learngene, collective, made = ensure_run(
        run_dir,
        args.seed,
        layers,
        num_tasks=args.num_tasks,
        epochs_per_task=args.epochs_per_task,
        train_per_class=args.images_per_class,
    )
    cfg = FewShotConfig(device="cpu")
    lr_grid = [float(x) for x in args.lr_grid.split(",")]
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "shared": "2 cores shared with other jobs; timings are inflated",
        },
        "run_dir": str(run_dir),
        "made_run": made,
        "learngene": learngene.config.layer_names,
        "learngene_parameters": learngene.num_parameters(),
    }

    # --- size sweep on the embedded data
    data, novel, open_world = load_fewshot_data(learngene)
    episodes = sample_episodes(data, novel, args.episodes, 5, args.shots, args.queries, seed=args.seed)
    tune = sample_episodes(data, open_world, args.tune_episodes, 5, args.shots, args.queries, seed=args.seed + 10_000)
    methods = size_methods(learngene, collective) + baseline_methods(
        learngene, collective, weight_selection_method=False
    )
    start = time.perf_counter()
    sizes = compare_methods(
        learngene, episodes, cfg, methods=methods, tune_lr_episodes=tune, lr_grid=lr_grid, seed=args.seed, progress=True
    )
    sizes["seconds"] = time.perf_counter() - start
    sizes["sizes"] = size_rows(sizes)
    report["sizes"] = sizes
    report["tuning"] = (
        f"lr from {{{', '.join(f'{lr:g}' for lr in lr_grid)}}} for the fine-tuned methods and the L2 "
        f"strength from {{{', '.join(f'{v:g}' for v in DEFAULT_L2_GRID)}}} for logistic regression, picked on "
        f"{len(tune)} open-world episode(s); FewShotConfig defaults otherwise"
    )
    write_report(report, learngene, run_dir, Path(args.output))

    # --- digits: the same learngene on real handwritten digits
    if not args.skip_digits:
        digits, d_novel, d_open = load_fewshot_data(learngene, "digits")
        d_episodes = sample_episodes(
            digits,
            d_novel,
            args.digits_episodes or args.episodes,
            args.digits_ways,
            args.shots,
            args.queries,
            seed=args.seed,
        )
        d_tune = sample_episodes(
            digits, d_open, args.tune_episodes, args.digits_ways, args.shots, args.queries, seed=args.seed + 10_000
        )
        d_methods = comparison_methods(learngene)[:2] + baseline_methods(
            learngene, collective, weight_selection_method=args.digits_weight_selection
        )
        start = time.perf_counter()
        report["digits"] = compare_methods(
            learngene,
            d_episodes,
            cfg,
            methods=d_methods,
            tune_lr_episodes=d_tune,
            lr_grid=lr_grid,
            seed=args.seed,
            progress=True,
        )
        report["digits"]["seconds"] = time.perf_counter() - start
        report["digits"]["setting"]["dataset"] = "digits"
        write_report(report, learngene, run_dir, Path(args.output))


def write_report(report: dict, learngene: Learngene, run_dir: Path, out: Path) -> None:
    """Write the JSON, the markdown (also printed) and the size plot of what has run so far."""
    sizes = report["sizes"]
    s = sizes["setting"]
    title = f"embedded data, {s['ways']}-way {s['shots']}-shot, {s['episodes']} episodes"
    lines = [
        "# Descendant sizes and baselines",
        "",
        f"Learngene {learngene.config.layer_names} ({learngene.num_parameters():,} parameters) from `{run_dir}`; "
        f"CPU, {torch.get_num_threads()} torch threads, machine shared with other jobs.",
        "",
        f"Tuning: {report['tuning']}.",
        "",
        f"## Sizes ({title})",
        "",
        format_sizes_table(sizes["sizes"]),
        "",
        "All methods on the same episodes:",
        "",
        format_table(sizes),
    ]
    if "digits" in report:
        d = report["digits"]["setting"]
        lines += [
            "",
            f"## Digits (scikit-learn's real 8x8 digits upscaled; novel classes 7-9, {d['ways']}-way "
            f"{d['shots']}-shot, {d['episodes']} episodes; tuned on open-world classes 4-6)",
            "",
            format_table(report["digits"]),
        ]
    text = "\n".join(lines) + "\n"
    write_json_atomic(out.with_suffix(".json"), report)
    write_text_atomic(out.with_suffix(".md"), text)
    plot_descendant_sizes(sizes["sizes"], out.with_suffix(".png"), title=title)
    print(text)


if __name__ == "__main__":
    main()
