"""Train a collective model on a stream of tasks (thin script over learngene_hf.training).

    python examples/train_collective.py                     # embedded data, preset "small"
    accelerate launch examples/train_collective.py ...      # same, on every accelerate process
    python examples/train_collective.py --preset paper --dataset uoft-cs/cifar100   # the paper's setting

Writes the run folder (model/, gradient_record.json, heatmap.png, report.json, report.md,
run_config.json, checkpoint/). Running the same command again resumes after the last finished
task (pass --no-resume to start over).
"""

from __future__ import annotations

import argparse
import json

from accelerate import Accelerator

from learngene_hf.data import add_split_arguments, parse_class_list
from learngene_hf.training import (
    PRESET_TRAINING_DEFAULTS,
    CollectiveTrainingConfig,
    resolve_mixed_precision,
    train_collective,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=sorted(PRESET_TRAINING_DEFAULTS),
                        help="model size and training defaults (default: small)")
    parser.add_argument("--dataset", default=None,
                        help="a datasets source (Hub id, local folder, parquet); default: the embedded procedural dataset")
    parser.add_argument("--image-column", default="img")
    parser.add_argument("--label-column", default="fine_label")
    parser.add_argument("--image-size", type=int, default=None, help="resize images to this side")
    parser.add_argument("--num-tasks", type=int, default=None, help="tasks in the stream (small: 15, paper: 50)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--epochs-per-task", type=int, default=None)
    parser.add_argument("--images-per-class", type=int, default=None,
                        help="training images per class and task (small: 300; paper: all)")
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="SGD learning rate (small: 0.03, paper: 1e-3)")
    parser.add_argument("--ewc-weight", type=float, default=0.0, help="EWC penalty weight (0: off)")
    parser.add_argument("--growth", default="paper",
                        help="'paper', 'none', or a JSON list of events, e.g. '[{\"task\": 1, \"op\": \"deepen\", \"layer\": \"conv5\"}]'")
    parser.add_argument("--thresholds", default=None, help="comma-separated gradient thresholds (default 5e-10,1e-6,1e-4,5e-4)")
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/collective")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from the output folder's checkpoint (default: on)")
    parser.add_argument("--stop-after-task", type=int, default=None,
                        help="stop after this many finished tasks (time budgets; resume later)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_split_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    growth = args.growth if args.growth in ("paper", "none") else json.loads(args.growth)
    config = CollectiveTrainingConfig.for_preset(
        args.preset,
        dataset=args.dataset,
        image_column=args.image_column,
        label_column=args.label_column,
        image_size=args.image_size,
        num_tasks=args.num_tasks,
        ways=args.ways,
        epochs_per_task=args.epochs_per_task,
        train_per_class=args.images_per_class,
        test_per_class=args.test_per_class,
        batch_size=args.batch_size,
        lr=args.lr,
        ewc_weight=args.ewc_weight,
        growth=growth,
        thresholds=[float(t) for t in args.thresholds.split(",")] if args.thresholds else None,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        split_seed=args.split_seed,
        base=parse_class_list(args.base_classes) if args.base_classes else None,
        open_world=parse_class_list(args.open_world_classes) if args.open_world_classes else None,
        novel=parse_class_list(args.novel_classes) if args.novel_classes else None,
        stop_after_task=args.stop_after_task,
    )
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config.mixed_precision))
    run = train_collective(config, args.output_dir, accelerator=accelerator, resume=args.resume,
                           progress=not args.no_progress)
    if accelerator.is_main_process:
        report = run.report
        print(f"{report['finished_tasks']}/{report['num_tasks']} tasks; mean accuracy after learning "
              f"{report['mean_accuracy_after']:.3f}, at the end {report['mean_accuracy_end']:.3f}; "
              f"{report['images_per_second']:.1f} images/s; outputs in {run.run_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
