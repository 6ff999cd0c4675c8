"""The whole learngene pipeline in one command (thin script over learngene_hf.pipeline).

    python examples/run_pipeline.py                      # embedded data, ~15 minutes on 2 CPU cores
    accelerate launch examples/run_pipeline.py           # the same on every accelerate process / GPU
    python examples/run_pipeline.py --dataset uoft-cs/cifar100 --preset paper   # CIFAR-100, paper model

Stages: (1) train the collective model on a stream of tasks from the base classes, growing it
and recording gradient statistics; (2) select the learngene (default: candidate blocks probed on
the open-world classes) and save it; (3) push it to a Hub (default: a local Hub server under
OUTPUT_DIR/hub) and pull it back by commit sha; (4) train individual models from the pulled
learngene and from scratch on identical novel-class episodes (with --compare also the whole
backbone and the last/first/worst blocks; learning rates picked on open-world episodes) and
print the accuracy table. Rerunning the same command resumes the collective training.
"""

from __future__ import annotations

import argparse
import sys

from learngene_hf.errors import LearngeneError
from learngene_hf.pipeline import DEFAULT_REPO_ID, PipelineConfig, parse_int_list, run_pipeline


def parse_args(argv: list[str] | None = None) -> tuple[PipelineConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="runs/pipeline", help="where every stage writes (default: runs/pipeline)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("collective model")
    g.add_argument("--preset", default="small", choices=["tiny", "small", "paper"], help="model size and training defaults")
    g.add_argument("--dataset", default=None, help="datasets source (Hub id, folder, parquet); default: embedded data")
    g.add_argument("--image-column", default="img")
    g.add_argument("--label-column", default="fine_label")
    g.add_argument("--image-size", type=int, default=None)
    g.add_argument("--num-tasks", type=int, default=None, help="tasks in the stream (default: the preset's)")
    g.add_argument("--epochs-per-task", type=int, default=None)
    g.add_argument("--images-per-class", type=int, default=None, help="training images per class and task")
    g = p.add_argument_group("learngene")
    g.add_argument("--strategy", default="validated", choices=["validated", "criterion", "paper"])
    g.add_argument("--criterion", default=None, help="paper | relative_activity | stability | weight_change")
    g.add_argument("--k", type=int, default=3, help="layers in the learngene (default 3)")
    g.add_argument("--layers", default=None, help="explicit layers, e.g. 0-2 (overrides --strategy)")
    g.add_argument("--probe-episodes", type=int, default=4, help="open-world episodes per candidate (validated)")
    g = p.add_argument_group("hub")
    g.add_argument("--repo-id", default=DEFAULT_REPO_ID)
    g.add_argument("--hub-endpoint", default=None,
                   help="Hub URL (default: start a local Hub server under OUTPUT_DIR/hub; https://huggingface.co for the real one)")
    g.add_argument("--token", default=None)
    g = p.add_argument_group("few-shot")
    g.add_argument("--shots", default="5,10", help="comma-separated K values (default 5,10)")
    g.add_argument("--episodes", type=int, default=20)
    g.add_argument("--ways", type=int, default=5)
    g.add_argument("--queries", type=int, default=15)
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--lr", type=float, default=5e-3, help="lr when --no-tune-lr")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--tune-lr", action=argparse.BooleanOptionalAction, default=True,
                   help="pick every method's lr on open-world episodes (default: on)")
    g.add_argument("--tune-episodes", type=int, default=3, help="open-world episodes per lr for --tune-lr")
    g.add_argument("--lr-grid", default="0.01,0.02,0.05", help="learning rates tried by --tune-lr")
    g.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                   help="also the whole backbone, last-k, first-k and worst-k blocks (default: on)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    from learngene_hf.criterion import parse_layers

    return PipelineConfig(
        output_dir=a.output_dir, seed=a.seed, preset=a.preset, dataset=a.dataset, image_column=a.image_column,
        label_column=a.label_column, image_size=a.image_size, num_tasks=a.num_tasks, epochs_per_task=a.epochs_per_task,
        images_per_class=a.images_per_class, strategy=a.strategy, criterion=a.criterion, k=a.k,
        layers=parse_layers(a.layers) if a.layers else None, probe_episodes=a.probe_episodes, repo_id=a.repo_id,
        hub_endpoint=a.hub_endpoint, token=a.token, shots=parse_int_list(a.shots), episodes=a.episodes, ways=a.ways,
        queries=a.queries, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, tune_lr=a.tune_lr, tune_episodes=a.tune_episodes, lr_grid=[float(x) for x in a.lr_grid.split(',')], compare=a.compare,
    ), not a.no_progress


def main(argv: list[str] | None = None) -> None:
    cfg, progress = parse_args(argv)
    from accelerate import Accelerator

    from learngene_hf.training import resolve_mixed_precision

    accelerator = Accelerator(mixed_precision=resolve_mixed_precision("auto"))
    try:
        run_pipeline(cfg, accelerator=accelerator, progress=progress)
    finally:
        accelerator.end_training()


if __name__ == "__main__":
    try:
        main()
    except LearngeneError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
