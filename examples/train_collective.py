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
import os

# Only light modules (the standard library, the config dataclasses) are imported before the
# arguments are parsed, so --help answers at once; torch and the models come in main().
os.environ.setdefault("LEARNGENE_HF_DEFER_MODELS", "1")

from learngene_hf.cli import (  # noqa: E402
    ArgumentParser,
    add_config_arguments,
    config_kwargs,
    make_accelerator,
    parse_class_ids,
    run_script,
    silence_progress_bars,
)
from learngene_hf.training.config import (  # noqa: E402
    OPEN_WORLD_SCORES,
    PRESET_TRAINING_DEFAULTS,
    REPLAY_SELECTIONS,
    CollectiveTrainingConfig,
)

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
        parsers={"growth": _growth, "base": parse_class_ids, "open_world": parse_class_ids, "novel": parse_class_ids},
        choices={
            "preset": sorted(PRESET_TRAINING_DEFAULTS),
            "mixed_precision": ["auto", "no", "fp16", "bf16"],
            "optimizer": ["sgd", "adamw"],
            "open_world_method": list(OPEN_WORLD_SCORES),
            "replay_selection": list(REPLAY_SELECTIONS),
        },
        defaults={"preset": "small"},
        default_text={
            "image_column": "the dataset's Image feature",
            "label_column": "the dataset's ClassLabel feature",
            "image_size": "the images' own size",
            **{name: _preset_default(name) for name in preset_fields},
            "mixed_precision": "accelerate launch's choice, else auto",
            "base": "64% of the classes",
            "open_world": "16%",
            "novel": "20%",
        },
        help={
            "preset": "model size with its training defaults: VGG-BN paper / small / tiny, ViT vit-paper / "
            "vit-small / vit-tiny",
            "num_tasks": "tasks in the stream",
            "ways": "classes per task",
            "epochs_per_task": "epochs per task",
            "train_per_class": "training images per class and task",
            "test_per_class": "test images per class and task",
            "batch_size": "batch size",
            "lr": "peak learning rate of the optimizer (SGD; AdamW for the ViT presets)",
            "lr_schedule": "learning rate within every task: constant (the paper's) or cosine (decay to 0 at the "
            "task's last step)",
            "warmup_epochs": "linear warm-up of the learning rate at the start of every task, in epochs",
            "momentum": "SGD momentum (ignored by AdamW)",
            "weight_decay": "weight decay of the optimizer",
            "optimizer": "sgd or adamw",
            "growth_until": "the 'paper' growth widens one layer per task up to this task",
            "growth_layers": "the 'paper' growth widens the last this many conv layers, round robin",
            "growth_factor": "the 'paper' growth ends with those layers this many times as wide",
            "ewc_batches": "batches of a task's training images the EWC Fisher is estimated on",
            "bn_freeze_after": "from this task on every BatchNorm layer keeps its running statistics (0: never)",
            "replay_per_class": "exemplars kept per class of every finished task and replayed (0: off)",
            "replay_selection": "how the exemplars are picked: herding (iCaRL) or random",
            "replay_batch_size": "replayed images added to every training step",
            "outlier_exposure": "weight of a loss that makes heads unsure on other tasks' replayed images (0: off; "
            "needs replay)",
            "outlier_exposure_heads": "which heads that loss trains: current or all",
            "record_gradients": "record the gradient statistics the selection criteria read",
            "seed": "seed of the task stream, the model's initial weights and the data order",
            "image_column": "image column of --dataset",
            "label_column": "label column of --dataset",
            "image_size": "resize every image to this side",
            "open_world_method": "the score reported as open_world_auroc (all are measured)",
            "open_world_known": "held-out images of the known classes each open-world AUROC compares against",
            "eval_batch_size": "images per forward pass when evaluating",
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
    run.add_argument("--output-dir", default="runs/collective", help="the run folder (default: runs/collective)")
    run.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the output folder's checkpoint (default: on)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars (the library's and the Hub's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import learngene_hf  # the heavy part: torch, transformers, timm and the trainer
    from learngene_hf.training.trainer import train_collective

    learngene_hf.import_models()
    if args.no_progress:
        silence_progress_bars()
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
