"""Few-shot evaluation of a learngene against the from-scratch baseline (thin script over learngene_hf.fewshot).

    python examples/few_shot.py                                   # runs/learngene, embedded data
    accelerate launch examples/few_shot.py --learngene ORG/NAME   # a learngene on the Hub, all processes
    python examples/few_shot.py --compare --tune-lr               # + whole / last-k / first-k / worst-k, tuned lrs

For each of --episodes N-way K-shot episodes on the novel classes (from the learngene's class split
unless --novel-classes is given) a fresh individual model is built from the learngene and a fresh
scratch model with the same architecture; both are trained with identical data, seed and schedule
(paper defaults: SGD lr 5e-3, 30 epochs, batch 32) and evaluated on the queries. Episodes are spread
over the accelerate processes. --tune-lr picks every method's learning rate (scratch included) on
open-world episodes, never on the novel classes.

Writes OUTPUT_DIR/results.json (per-episode accuracies, mean +/- 95% CI per method, paired
difference to scratch), results.md (the table, also printed) and accuracy.png.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext

from accelerate import Accelerator

from learngene_hf.data import parse_class_list, sample_episodes
from learngene_hf.errors import ArtifactError
from learngene_hf.fewshot import DEFAULT_LR_GRID, FewShotConfig, compare_methods, format_table, load_fewshot_data, write_results
from learngene_hf.learngene import Learngene


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learngene", default="runs/learngene", help="a learngene folder or Hub repo id (default: runs/learngene)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub learngene")
    parser.add_argument("--hub-endpoint", default=None, help="a self-hosted Hub, e.g. http://127.0.0.1:8080")
    parser.add_argument("--dataset", default=None,
                        help="a datasets source (Hub id, local folder, parquet); default: the learngene's dataset")
    parser.add_argument("--image-column", default="img")
    parser.add_argument("--label-column", default="fine_label")
    parser.add_argument("--image-size", type=int, default=None, help="resize images to this side")
    parser.add_argument("--novel-classes", default=None, help="class ids, e.g. '80-99' (default: the learngene's novel classes)")
    parser.add_argument("--open-world-classes", default=None,
                        help="class ids for --tune-lr (default: the learngene's open-world classes)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--lr", type=float, default=5e-3, help="SGD learning rate (paper: 5e-3)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs over the support set (paper: 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (paper: 32)")
    parser.add_argument("--no-augment", action="store_true", help="no random crop / flip of support images")
    parser.add_argument("--keep-bn-stats", action="store_true",
                        help="keep the collective model's BatchNorm statistics (default: re-estimate on the support set)")
    parser.add_argument("--freeze-learngene", action="store_true", help="train only the fresh layers")
    parser.add_argument("--compare", action="store_true",
                        help="also run the whole backbone, the last-k, first-k and worst-ranked blocks of the collective run")
    parser.add_argument("--collective-run", default=None, help="collective run folder for --compare (default: the learngene's run_dir)")
    parser.add_argument("--tune-lr", action="store_true", help="pick every method's lr on open-world episodes")
    parser.add_argument("--lr-grid", default=",".join(f"{lr:g}" for lr in DEFAULT_LR_GRID), help="learning rates for --tune-lr")
    parser.add_argument("--tune-episodes", type=int, default=5, help="open-world episodes per lr for --tune-lr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/few_shot")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def load_learngene(ref: str, revision: str | None) -> Learngene:
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") != 1 or os.path.exists(ref)
    if looks_local and not os.path.isdir(ref):
        raise ArtifactError(
            f"No learngene at {ref}. Run the pipeline (examples/train_collective.py, then examples/extract_learngene.py "
            "--output-dir runs/learngene) first, or pass --learngene ORG/NAME or a learngene folder."
        )
    return Learngene.from_pretrained(ref, revision=revision)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=not _has_gpu())
    hub = nullcontext()
    if args.hub_endpoint:
        from learngene_hf.testing.hub import use_endpoint

        hub = use_endpoint(args.hub_endpoint)
    with hub:
        with accelerator.main_process_first():
            learngene = load_learngene(args.learngene, args.revision)
        data, novel, open_world = load_fewshot_data(
            learngene, args.dataset, image_column=args.image_column, label_column=args.label_column, image_size=args.image_size,
            novel_classes=parse_class_list(args.novel_classes) if args.novel_classes else None,
            open_world_classes=parse_class_list(args.open_world_classes) if args.open_world_classes else None,
        )
    episodes = sample_episodes(data, novel, args.episodes, args.ways, args.shots, args.queries, seed=args.seed)
    tune_episodes = None
    if args.tune_lr:
        tune_episodes = sample_episodes(data, open_world, args.tune_episodes, args.ways, args.shots, args.queries,
                                        seed=args.seed + 10_000)
    cfg = FewShotConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, augment=not args.no_augment,
                        bn_reestimate=not args.keep_bn_stats, device=str(accelerator.device))
    overrides = {"image_size": args.image_size} if args.image_size else {}
    from learngene_hf.fewshot import comparison_methods

    methods = comparison_methods(learngene, compare=args.compare, collective_run=args.collective_run,
                                 freeze_learngene=args.freeze_learngene, **overrides)
    results = compare_methods(
        learngene, episodes, cfg, methods=methods,
        tune_lr_episodes=tune_episodes, lr_grid=[float(x) for x in args.lr_grid.split(",")],
        accelerator=accelerator, seed=args.seed, progress=not args.no_progress,
    )
    results["setting"]["learngene"] = args.learngene
    results["setting"]["revision"] = args.revision
    results["setting"]["processes"] = accelerator.num_processes
    if accelerator.is_main_process:
        paths = write_results(results, args.output_dir, plot=not args.no_plot)
        print(format_table(results))
        print(f"results: {paths['results']}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    try:
        main()
    except ArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
