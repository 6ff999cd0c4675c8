"""Train a collective model on a stream of tasks (thin script over learngene_hf.training).

    python examples/train_collective.py                     # embedded data, preset "small"
    accelerate launch examples/train_collective.py ...      # same, on every accelerate process
    python examples/train_collective.py --preset paper --dataset uoft-cs/cifar100   # the paper's setting
    python examples/train_collective.py --preset vit-small --output-dir runs/vit     # a linear-expansion ViT (TLEG)

Writes the run folder (model/, gradient_record.json, heatmap.png, report.json, report.md,
run_config.json, checkpoint/). Running the same command again resumes after the last finished
task (pass --no-resume to start over).
"""

from __future__ import annotations

import argparse
import json

from learngene_hf.cli import ArgumentParser, add_config_arguments, config_kwargs, make_accelerator, run_script
from learngene_hf.data import parse_class_list
from learngene_hf.training.config import (
    OPEN_WORLD_SCORES,
    PRESET_TRAINING_DEFAULTS,
    REPLAY_SELECTIONS,
    CollectiveTrainingConfig,
)
from learngene_hf.training.trainer import train_collective

GROWTH_EXAMPLE = '[{"task": 1, "op": "deepen", "layer": "conv5"}]'


def _growth(text: str) -> str | list:
    if text in ("paper", "none"):
        return text
    try:
        events = json.loads(text)
    except json.JSONDecodeError:
        events = None
    if not isinstance(events, list):
        raise argparse.ArgumentTypeError(
            f"expected 'paper', 'none' or a JSON list of events such as '{GROWTH_EXAMPLE}', got {text!r}"
        )
    return events


def _class_list(text: str) -> list[int]:
    try:
        return parse_class_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _preset_default(name: str) -> str:
    fallback = CollectiveTrainingConfig.__dataclass_fields__[name].default
    values = {preset: d.get(name, fallback) for preset, d in PRESET_TRAINING_DEFAULTS.items()}

    def show(v) -> str:
        return "all" if v is None else f"{v:g}" if isinstance(v, (int, float)) else str(v)

    return "the preset's: " + ", ".join(f"{p} {show(v)}" for p, v in sorted(values.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    group = parser.add_argument_group("training (learngene_hf.training.config.CollectiveTrainingConfig)")
    preset_fields = sorted({name for d in PRESET_TRAINING_DEFAULTS.values() for name in d})
    add_config_arguments(
        group,
        CollectiveTrainingConfig,
        aliases={
            "train_per_class": ["--images-per-class"],
            "base": ["--base-classes"],
            "open_world": ["--open-world-classes"],
            "novel": ["--novel-classes"],
        },
        parsers={"growth": _growth, "base": _class_list, "open_world": _class_list, "novel": _class_list},
        choices={
            "preset": sorted(PRESET_TRAINING_DEFAULTS),
            "mixed_precision": ["auto", "no", "fp16", "bf16"],
            "optimizer": ["sgd", "adamw"],
            "open_world_method": list(OPEN_WORLD_SCORES),
            "replay_selection": list(REPLAY_SELECTIONS),
        },
        defaults={"preset": "small"},
        default_text={
            **{name: _preset_default(name) for name in preset_fields},
            "mixed_precision": "accelerate launch's choice, else auto",
            "base": "64% of the classes",
            "open_world": "16%",
            "novel": "20%",
        },
        help={
            "num_tasks": "tasks in the stream",
            "ways": "classes per task",
            "epochs_per_task": "epochs per task",
            "train_per_class": "training images per class and task",
            "test_per_class": "test images per class and task",
            "batch_size": "batch size",
            "lr": "SGD learning rate",
            "ewc_weight": "EWC penalty weight (0: off)",
            "ewc_cap": "cap each parameter's EWC curvature at half of SGD's stability limit, (1 + momentum) / lr, "
            "so long streams cannot diverge",
            "thresholds": "gradient thresholds of the record",
            "heatmap_threshold": "the threshold the heat map draws",
            "dataset": "a datasets source (Hub id, local folder, parquet); none: the embedded procedural dataset",
            "embedded": "JSON arguments of the embedded dataset, e.g. '{\"num_classes\": 20}'",
            "growth": f"'paper', 'none', or a JSON list of events, e.g. '{GROWTH_EXAMPLE}'",
            "mixed_precision": "auto (bf16/fp16 on CUDA, no on CPU), no, fp16 or bf16; wins over accelerate's setting "
            "when given",
            "base": "explicit base class ids, e.g. '0-5,8' (giving any class list makes the roles not given empty)",
            "open_world": "explicit open-world class ids",
            "novel": "explicit novel class ids",
            "stop_after_task": "stop after this many finished tasks (time budgets; run again to resume)",
            "split_seed": "seed of the default 64/16/20% base/open-world/novel split",
            "open_world_from_replay": "recompute the Mahalanobis class statistics and the knn bank from the replay "
            "exemplars after every task (needs --replay-per-class)",
            "open_world_knn_k": "the knn open-world score is the distance to this nearest neighbour in the bank",
            "open_world_bank_per_class": "normalised training embeddings kept per learnt class for the knn score",
        },
    )
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default="runs/collective")
    run.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the output folder's checkpoint (default: on)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    values = config_kwargs(args, CollectiveTrainingConfig)
    config = CollectiveTrainingConfig.for_preset(values.pop("preset"), **values)
    accelerator = make_accelerator(values.get("mixed_precision"), default=config.mixed_precision)
    run = train_collective(
        config, args.output_dir, accelerator=accelerator, resume=args.resume, progress=not args.no_progress
    )
    if accelerator.is_main_process:
        report = run.report
        print(
            f"{report['finished_tasks']}/{report['num_tasks']} tasks; mean accuracy after learning "
            f"{report['mean_accuracy_after']:.3f}, at the end {report['mean_accuracy_end']:.3f}; "
            f"{report['images_per_second']:.1f} images/s; outputs in {run.run_dir}"
        )
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main)
