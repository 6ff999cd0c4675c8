"""The whole learngene pipeline in one command (thin script over learngene_hf.pipeline).

    python examples/run_pipeline.py                      # embedded data, ~30 minutes on 2 CPU cores
    accelerate launch examples/run_pipeline.py           # the same on every accelerate process / GPU
    python examples/run_pipeline.py --dataset uoft-cs/cifar100 --preset paper   # CIFAR-100, paper model

Stages: (1) train the collective model on a stream of tasks from the base classes, growing it
and recording gradient statistics; (2) select the learngene (default: candidate blocks probed on
the open-world classes) and save it; (3) push it to a Hub (default: a local Hub server under
OUTPUT_DIR/hub) and pull it back by commit sha; (4) train individual models from the pulled
learngene and from scratch on identical novel-class episodes, with the frozen-feature baselines
(--compare, on by default; their L2 strength picked on open-world episodes; --compare-blocks also
fine-tunes the whole backbone, the last/first/worst blocks and weight selection; --lr-grid tunes
the fine-tuned methods' learning rates on open-world episodes) and print the accuracy table.
Rerunning the same command resumes the collective training.
"""

from __future__ import annotations

import argparse
import os

# Only light modules (the standard library, the config dataclasses) are imported before the
# arguments are parsed, so --help answers at once; torch and the models come in main().
os.environ.setdefault("LEARNGENE_HF_DEFER_MODELS", "1")

from learngene_hf.cli import (  # noqa: E402
    ArgumentParser,
    add_config_arguments,
    config_kwargs,
    make_accelerator,
    run_script,
    silence_progress_bars,
)
from learngene_hf.fewshot.config import DEFAULT_STEPS, FewShotConfig  # noqa: E402
from learngene_hf.pipeline import PipelineConfig  # noqa: E402
from learngene_hf.selection.config import CRITERIA, parse_layers  # noqa: E402
from learngene_hf.training.config import PRESET_TRAINING_DEFAULTS  # noqa: E402

#: The default few-shot recipe, whose values PipelineConfig's None fields leave in charge.
RECIPE = FewShotConfig()


def _layers(text: str) -> list[int]:
    try:
        return parse_layers(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (for example '0-2')") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    group = parser.add_argument_group("pipeline (learngene_hf.pipeline.PipelineConfig)")
    add_config_arguments(
        group,
        PipelineConfig,
        parsers={"layers": _layers},
        choices={
            "preset": sorted(PRESET_TRAINING_DEFAULTS),
            "strategy": ["validated", "criterion", "paper"],
            "criterion": list(CRITERIA),
        },
        default_text={
            "num_tasks": "the preset's",
            "size": "the learngene's: tiny for the compact learngene, small for a block of layers",
            "max_bytes": "the bytes of the first k full-width layers",
            "epochs_per_task": "the preset's",
            "images_per_class": "the preset's",
            "criterion": "stability",
            "dataset": "the embedded dataset",
            "hub_endpoint": "a local Hub server under OUTPUT_DIR/hub",
            "image_column": "the dataset's Image feature",
            "label_column": "the dataset's ClassLabel feature",
            "image_size": "the images' own size",
            "steps": f"{DEFAULT_STEPS}, the recipe's",
            "epochs": "none: steps are counted",
            "lr": f"{RECIPE.lr:g}, the recipe's",
            "batch_size": f"{RECIPE.batch_size}, the recipe's",
            "token": "the logged-in one / HF_TOKEN",
        },
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--mixed-precision",
        default=None,
        choices=["auto", "no", "fp16", "bf16"],
        help="wins over accelerate's setting when given (default: accelerate launch's choice, else auto)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars (the library's and the Hub's)")
    run.add_argument(
        "--quick",
        action="store_true",
        help="the whole cycle at a toy size (tiny preset, 2 tasks, 2 episodes) in well under a minute on a CPU: it "
        "shows the stages and the API, not the result; flags given as well win (output: runs/quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import learngene_hf  # the heavy part: torch, transformers, timm and every stage
    from learngene_hf.pipeline import run_pipeline, summary_markdown

    learngene_hf.import_models()
    if args.no_progress:
        silence_progress_bars()
    from learngene_hf.pipeline import QUICK

    cfg = PipelineConfig(**{**(QUICK if args.quick else {}), **config_kwargs(args, PipelineConfig)})
    accelerator = make_accelerator(args.mixed_precision)
    try:
        summary = run_pipeline(
            cfg, accelerator=accelerator, progress=not args.no_progress, log=None if args.quiet else print
        )
        if args.quiet and accelerator.is_main_process:  # the stage lines were hidden, the results are not
            print(summary_markdown(summary))
    finally:
        accelerator.end_training()


if __name__ == "__main__":
    run_script(main)
