"""What makes the main job cheaper, and what each lever costs the learngene.

The main job's collective stream (the ``small`` preset: 15 five-way tasks of the base classes,
growth, replay) is trained once per variant of its settings: fewer epochs with a schedule that
converges in them, fewer images per class, a growth schedule that does not make the whole stream
pay for the widest net. For every variant this writes what it costs (training wall time on this
machine, image passes, GFLOP of the training arithmetic, its rate against a matmul measured in the
same run) and what it gives: the collective model's accuracy right after each task and at the end
(mean forgetting), its open-world AUROC, and the worth of its first-block learngene (layers 0-2,
what the pipeline's validated selection has chosen in every run so far) on the same 20 novel-class
5-way 5-shot episodes: the "small" descendant (the learngene, one fresh block at half the width
and a linear head) fine-tuned with the library's recipe for its size, and the strongest method
that inherits nothing at that size
(scratch with the same recipe, logistic regression and nearest centroid on a random network of
the same architecture), with logistic regression on the whole collective model's features as the
reference line. L2 strengths are picked on open-world episodes.

Results: ``benchmarks/results/main_job_levers.{json,md}`` (a row per variant, updated after each).

    python benchmarks/main_job_levers.py                       # every variant, one after another
    python benchmarks/main_job_levers.py --only "3 epochs, cosine, 200 images"
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import sample_episodes
from learngene_hf.fewshot.compare import compare_methods
from learngene_hf.fewshot.config import FewShotConfig, descendant_recipe
from learngene_hf.fewshot.loading import load_fewshot_data
from learngene_hf.fewshot.methods import baseline_methods
from learngene_hf.fewshot.runner import Method
from learngene_hf.fewshot.tuning import tuning_episodes
from learngene_hf.flops import forward_flops
from learngene_hf.io import read_json, write_json_atomic, write_text_atomic
from learngene_hf.models.individual import IndividualConfig, IndividualModel
from learngene_hf.training.config import PRESET_TRAINING_DEFAULTS, CollectiveTrainingConfig
from learngene_hf.training.run import load_run
from learngene_hf.training.trainer import train_collective

RESULTS = Path(__file__).resolve().parent / "results"
SMALL = PRESET_TRAINING_DEFAULTS["small"]
#: Variants of the stream, as overrides of the "small" preset's defaults (the first is the preset).
VARIANTS: dict[str, dict[str, Any]] = {
    "small preset": {},
    "3 epochs, cosine": {"epochs_per_task": 3, "lr_schedule": "cosine", "lr": 0.05, "warmup_epochs": 0.5},
    "3 epochs, cosine, 200 images": {
        "epochs_per_task": 3, "lr_schedule": "cosine", "lr": 0.05, "warmup_epochs": 0.5, "train_per_class": 200,
    },
    "3 epochs, cosine, 200 images, growth x1.5": {
        "epochs_per_task": 3, "lr_schedule": "cosine", "lr": 0.05, "warmup_epochs": 0.5, "train_per_class": 200,
        "growth_factor": 1.5,
    },
    "2 epochs, cosine, 200 images, growth x1.5": {
        "epochs_per_task": 2, "lr_schedule": "cosine", "lr": 0.05, "warmup_epochs": 0.5, "train_per_class": 200,
        "growth_factor": 1.5,
    },
}  # fmt: skip


def matmul_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """This machine's float32 arithmetic rate in practice: GFLOP/s of a ``size`` x ``size`` matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def training_gflop(run: Any) -> float:
    """GFLOP of the stream's training arithmetic: per task, the images it trained on (replayed ones
    included) times 3 forward passes (forward + backward) of the model as it was after that task."""
    from learngene_hf.models.collective import CollectiveConfig, CollectiveModel

    report, total = run.report, 0.0
    widths = [int(w) for w in CollectiveConfig(preset=report["preset"]).widths]
    for task in report["tasks"]:
        for event in task["growth"]:
            widths[[n for n in report["layer_names"]].index(event["name"])] = int(event["new_width"])
        pool = run.model.config.pool
        config = CollectiveConfig(preset=report["preset"], widths=widths, pool=pool, task_num_labels=[5])
        flops = forward_flops(CollectiveModel(config), (3, 32, 32))
        replay = run.config.replay_batch_size / run.config.batch_size if task["task"] > 0 else 0.0
        total += 3 * flops * task["train_images_seen"] * (1 + replay) / 1e9
    return total


def learngene_worth(run: Any, episodes: int, seed: int = 0) -> dict[str, Any]:
    """The first-block learngene's small descendant vs what inherits nothing, on novel episodes."""
    learngene = Learngene.from_collective(
        run.model, [0, 1, 2], source={"run_dir": str(run.run_dir)}, task_stream=_task_stream(run),
        preprocessing={"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
    )  # fmt: skip
    data, novel, open_world = load_fewshot_data(learngene)
    novel_eps = sample_episodes(data, novel, episodes, 5, 5, 15, seed=seed)
    tune = tuning_episodes(data, open_world, 3, 5, 5, 15, seed=seed)
    recipe = descendant_recipe("small")
    methods = [
        Method("learngene", lambda n: IndividualModel.from_learngene(learngene, n, size="small"), recipe=recipe),
        Method("scratch", lambda n: IndividualModel(IndividualConfig.for_learngene(learngene, n, size="small")),
               recipe=recipe),
    ]  # fmt: skip
    methods += baseline_methods(learngene, run.model, weight_selection_method=False, size="small")
    grid = {"lr": [recipe.get("lr", FewShotConfig.lr)]}  # the size's recipe as it is; only the L2 strengths are tuned
    results = compare_methods(learngene, novel_eps, FewShotConfig(device="cpu"), methods=methods,
                              tune_lr_episodes=tune, tune_grid=grid, progress=False)  # fmt: skip
    methods = results["methods"]
    strongest = results["strongest_baseline"]["name"]
    gain = methods["learngene"]["diff_vs_strongest_baseline"]
    return {"accuracy": {name: m["mean"] for name, m in methods.items()}, "strongest": strongest,
            "gain_vs_strongest": gain, "learngene_vs_logreg_learngene": methods["learngene"]["mean"]
            - methods["logreg_learngene"]["mean"]}  # fmt: skip


def _task_stream(run: Any) -> dict[str, Any]:
    return {"dataset": read_json(run.run_dir / "run_config.json")["dataset"], "split": run.split.to_dict(),
            "num_tasks": run.report["finished_tasks"], "ways": run.report["ways"],
            "classes": sorted({c for task in run.report["task_stream"] for c in task})}  # fmt: skip


def run_variant(name: str, overrides: dict[str, Any], runs_dir: Path, episodes: int) -> dict[str, Any]:
    folder = runs_dir / name.replace(" ", "_").replace(",", "")
    config = CollectiveTrainingConfig.for_preset("small", **overrides)
    start = time.perf_counter()
    if (folder / "report.json").is_file():
        run = load_run(folder)
        wall = None  # trained earlier: its wall time is in the earlier row
    else:
        run = train_collective(config, folder, resume=False, progress=False)
        wall = time.perf_counter() - start
    report = run.report
    seconds = sum(t["train_seconds"] for t in report["tasks"])
    gflop = training_gflop(run)
    row = {
        "variant": name, "settings": {k: getattr(run.config, k) for k in ("epochs_per_task", "train_per_class", "lr",
                                       "lr_schedule", "warmup_epochs", "growth_factor", "replay_per_class")},
        "wall_seconds": wall, "train_seconds": seconds, "images_per_second": report["images_per_second"],
        "training_gflop": gflop, "gflops_per_second": gflop / seconds, "final_widths": report["final_widths"],
        "mean_accuracy_after": report["mean_accuracy_after"], "mean_accuracy_end": report["mean_accuracy_end"],
        "mean_forgetting": report["mean_forgetting"], "open_world_aurocs": report["mean_open_world_aurocs"],
    }  # fmt: skip
    row["learngene"] = learngene_worth(run, episodes)
    print(f"{name}: {seconds:.0f} s training, forgetting {row['mean_forgetting']:.3f}, learngene gain "
          f"{100 * row['learngene']['gain_vs_strongest']['mean']:+.1f}", flush=True)  # fmt: skip
    return row


def write(rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    write_json_atomic(RESULTS / "main_job_levers.json", {"machine": machine, "rows": rows})
    lines = [
        "# Main job levers: collective stream variants, their cost and their learngene",
        "",
        f"Machine: {machine['description']}; matmul rate measured in the run: {machine['matmul_gflops']:.0f} GFLOP/s. "
        "Accuracy in %, 5-way 5-shot, 20 novel-class episodes; the learngene is the first block (layers 0-2) and its "
        "descendant the 'small' size (learngene, one fresh block at half the collective's width, linear head) "
        "with the library's recipe for it. 'vs strongest' is the "
        "paired difference to the best method that inherits nothing at that size (scratch, logreg_random, "
        "centroid_random).",
        "",
        "| variant | train s | GFLOP | GFLOP/s | acc. after | forgetting | AUROC energy | learngene | strongest "
        "(inherits nothing) | vs strongest | logreg collective |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for r in rows:
        lg = r["learngene"]
        acc, gain = lg["accuracy"], lg["gain_vs_strongest"]
        lines.append(
            f"| {r['variant']} | {r['train_seconds']:.0f} | {r['training_gflop']:.0f} | {r['gflops_per_second']:.0f} | "
            f"{100 * r['mean_accuracy_after']:.1f} | {r['mean_forgetting']:.3f} | "
            f"{r['open_world_aurocs'].get('energy', float('nan')):.3f} | {100 * acc['learngene']:.1f} | "
            f"{lg['strongest']} {100 * acc[lg['strongest']]:.1f} | "
            f"{100 * gain['mean']:+.1f} +/- {100 * (gain['ci95'] or 0):.1f} | {100 * acc['logreg_collective']:.1f} |"
        )
    write_text_atomic(RESULTS / "main_job_levers.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants (names as in VARIANTS)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/main_job_levers"))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--note", default="", help="machine load or other remarks for the results")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    previous = RESULTS / "main_job_levers.json"
    rows = [r for r in (read_json(previous)["rows"] if previous.is_file() else []) if r["variant"] not in names]
    machine = {"description": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads. {args.note}".strip(), "matmul_gflops": matmul_gflops()}  # fmt: skip
    for name in names:
        rows.append(run_variant(name, VARIANTS[name], args.runs_dir, args.episodes))
        rows.sort(key=lambda r: list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 99)
        write(rows, machine)


if __name__ == "__main__":
    main()
