"""Few-shot evaluation of a learngene against the from-scratch baseline (thin script over learngene_hf.fewshot).

    python examples/few_shot.py                                   # runs/learngene, embedded data
    accelerate launch examples/few_shot.py --learngene ORG/NAME   # a learngene on the Hub, all processes
    python examples/few_shot.py --compare --tune-lr               # + whole / last-k / first-k / worst-k, baselines
    python examples/few_shot.py --compare --no-blocks --tune-lr   # + only the baselines (frozen features: cheap)
    python examples/few_shot.py --sizes --tune-lr                 # descendants of several sizes, same-size baselines
    python examples/few_shot.py --dataset digits --ways 3         # scikit-learn's real digits (novel classes 7-9)
    python examples/few_shot.py --recipe paper                    # the paper's schedule, for reproduction

For each of --episodes N-way K-shot episodes on the novel classes (from the learngene's class split
unless --novel-classes is given) a fresh individual model is built from the learngene and a fresh
scratch model with the same architecture; both are trained with identical data, seed and recipe
and evaluated on the queries. The default recipe counts optimisation steps, fits the head on
frozen features first and then fine-tunes everything (LP-FT), with warm-up, cosine decay and label
smoothing; --recipe paper trains with the paper's schedule (SGD lr 5e-3, 30 epochs, batch 32), and
any flag of the training group changes one value of the recipe. Episodes are spread over the
accelerate processes. --tune-lr picks every method's recipe values (lr, and steps / weight decay
with --steps-grid / --wd-grid; scratch included) on open-world episodes, never on the novel classes.

--compare also runs the baselines on the same episodes: logistic regression (L2 picked on
open-world episodes with --tune-lr) and nearest centroid (cosine) on standardized 2x2-pooled frozen
features of a random descendant, of the learngene and of the whole collective model, and weight
selection (Xu et al., ICLR 2024) from the collective model. --sizes compares descendants of
several sizes (learngene + head, + one fresh block, the collective's size) with scratch and weight
selection of the same size and writes sizes.json, sizes.md and sizes.png.

Writes OUTPUT_DIR/results.json (per-episode accuracies, mean +/- 95% CI per method, paired
difference to scratch), results.md (the table, also printed first) and accuracy.png. The output
folder is checked before any training, and every result goes to OUTPUT_DIR/episodes.jsonl as it is
measured (learngene_hf.fewshot.journal): a run that fails or is stopped keeps what it measured, and
the same command run again reads those results back instead of training them again.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

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
from learngene_hf.errors import ArtifactError  # noqa: E402
from learngene_hf.fewshot.config import DEFAULT_STEPS, ComparisonConfig, FewShotConfig  # noqa: E402
from learngene_hf.io import writable_folder  # noqa: E402

if TYPE_CHECKING:
    from learngene_hf.artifact.learngene import Learngene


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument(
        "--learngene", default="runs/learngene", help="a learngene folder or Hub repo id (default: runs/learngene)"
    )
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub learngene")
    parser.add_argument("--hub-endpoint", default=None, help="a self-hosted Hub, e.g. http://127.0.0.1:8080")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default=None,
        help="a datasets source (Hub id, local folder, parquet); default: the learngene's dataset",
    )
    data.add_argument("--image-column", default=None, help="image column of --dataset (default: its Image feature)")
    data.add_argument("--label-column", default=None, help="label column of --dataset (default: its ClassLabel)")
    data.add_argument("--image-size", type=int, default=None, help="resize images to this side")
    data.add_argument(
        "--novel-classes",
        type=parse_class_ids,
        default=None,
        metavar="IDS",
        help="class ids, e.g. '80-99' (default: the learngene's novel classes)",
    )
    data.add_argument(
        "--allow-base-classes",
        action="store_true",
        help="accept novel / open-world classes that the collective model trained on (refused by default)",
    )
    data.add_argument(
        "--open-world-classes",
        type=parse_class_ids,
        default=None,
        metavar="IDS",
        help="class ids for --tune-lr (default: the learngene's open-world classes)",
    )
    episodes = parser.add_argument_group("episodes and methods (learngene_hf.fewshot.config.ComparisonConfig)")
    add_config_arguments(
        episodes,
        ComparisonConfig,
        default_text={"size": "the learngene's: tiny for a learngene of every layer (compact), else small"},
    )
    episodes.add_argument(
        "--collective-run",
        default=None,
        help="collective run folder for --compare / --sizes (default: the learngene's run_dir)",
    )
    schedule = parser.add_argument_group(
        "training recipe (learngene_hf.fewshot.config.FewShotConfig; --recipe picks the "
        "named values, the other flags change single ones)"
    )
    add_config_arguments(
        schedule,
        FewShotConfig,
        exclude={"device"},
        negations={"bn_reestimate": ["--keep-bn-stats"]},
        help={
            "steps": "optimisation steps; each trains on min(batch_size, N) support images drawn without replacement",
            "epochs": "count passes over the support set instead of steps (how --recipe paper counts)",
        },
        default_text={"steps": f"{DEFAULT_STEPS}, the default recipe's", "epochs": "none: steps are counted"},
    )
    schedule.add_argument(
        "--mixed-precision",
        default=None,
        choices=["auto", "no", "fp16", "bf16"],
        help="wins over accelerate's setting when given (default: accelerate launch's choice, else no)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output-dir", default="runs/few_shot", help="results.json, results.md, accuracy.png (default: runs/few_shot)"
    )
    out.add_argument("--no-plot", action="store_true", help="write no accuracy.png / sizes.png")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bars (the library's and the Hub's)")
    return parser.parse_args(argv)


def fewshot_config(args: argparse.Namespace, size: str | None, device: str | None = None) -> FewShotConfig:
    """The recipe the command line asks for: ``--recipe`` (default: the library's, with the values of
    the descendant ``size``), with the recipe flags that were given on top."""
    from learngene_hf.fewshot.config import sized_recipe

    given = config_kwargs(args, FewShotConfig)
    return sized_recipe(size, given.pop("recipe", "default"), **given, device=device)


def load_learngene(ref: str, revision: str | None, endpoint: str | None = None) -> Learngene:
    from learngene_hf.artifact.learngene import Learngene

    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") != 1 or os.path.exists(ref)
    if looks_local and not os.path.isdir(ref):
        raise ArtifactError(
            f"No learngene at {ref}. Run the pipeline (examples/train_collective.py, then "
            "examples/extract_learngene.py "
            "--output-dir runs/learngene) first, or pass --learngene ORG/NAME or a learngene folder."
        )
    return Learngene.from_pretrained(ref, revision=revision, endpoint=endpoint)


def journal_setting(learngene: Learngene, run: ComparisonConfig, collective_run: str | None) -> dict:
    """What defines a result besides its method and episode (episodes.jsonl): the learngene (its
    tensors and config) and, for --compare / --sizes, the collective model's weights file."""
    from learngene_hf.artifact.save_and_load import file_sha256
    from learngene_hf.fewshot.journal import fingerprint
    from learngene_hf.fewshot.loading import collective_run_dir

    config = learngene.config.to_dict()
    config["source"] = {k: v for k, v in config["source"].items() if k != "pulled"}
    config.pop("checksums", None)
    setting = {"learngene": fingerprint(learngene.tensors), "config": fingerprint(config)}
    if run.compare or run.sizes:
        weights = Path(collective_run_dir(learngene, collective_run)) / "model" / "model.safetensors"
        setting["collective"] = file_sha256(weights) if weights.is_file() else str(weights)
    return setting


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import learngene_hf  # the heavy part: torch, transformers, timm and the library's stages
    from learngene_hf.data import sample_episodes
    from learngene_hf.errors import os_error_message
    from learngene_hf.fewshot.compare import (
        compare_methods,
        compare_sizes,
        format_sizes_table,
        format_table,
        write_results,
        write_sizes,
    )
    from learngene_hf.fewshot.config import default_size
    from learngene_hf.fewshot.journal import record_episodes
    from learngene_hf.fewshot.loading import collective_model_of, load_fewshot_data
    from learngene_hf.fewshot.methods import comparison_methods
    from learngene_hf.fewshot.tuning import tuning_episodes

    learngene_hf.import_models()
    if args.no_progress:
        silence_progress_bars()
    run = ComparisonConfig(**config_kwargs(args, ComparisonConfig))
    out = writable_folder(args.output_dir, "the output folder (--output-dir)")  # before any training
    accelerator = make_accelerator(args.mixed_precision, default="no")
    with accelerator.main_process_first():
        learngene = load_learngene(args.learngene, args.revision, args.hub_endpoint)
    run.size = run.size or default_size(learngene)
    cfg = fewshot_config(args, run.size, str(accelerator.device))
    data, novel, open_world = load_fewshot_data(
        learngene,
        args.dataset,
        image_column=args.image_column,
        label_column=args.label_column,
        image_size=args.image_size,
        novel_classes=args.novel_classes,
        open_world_classes=args.open_world_classes,
        allow_base_classes=args.allow_base_classes,
    )
    episodes = sample_episodes(data, novel, run.episodes, run.ways, run.shots, run.queries, seed=run.seed)
    tune_episodes = None
    if run.tune_lr:
        tune_episodes = tuning_episodes(
            data, open_world, run.tune_episodes, run.ways, run.shots, run.queries, seed=run.seed
        )
    overrides = {"image_size": args.image_size} if args.image_size else {}
    methods = comparison_methods(
        learngene,
        compare=run.compare,
        collective_run=args.collective_run,
        freeze_learngene=run.freeze_learngene,
        baselines=run.baselines,
        blocks=run.blocks,
        size=run.size,
        **overrides,
    )
    setting = journal_setting(learngene, run, args.collective_run)
    # every episode's result goes to episodes.jsonl as it is measured; a rerun reads them back
    with record_episodes(out / "episodes.jsonl", setting, rank=accelerator.process_index) as journal:
        results = compare_methods(
            learngene,
            episodes,
            cfg,
            methods=methods,
            tune_lr_episodes=tune_episodes,
            tune_grid=run.tune_grid(),
            accelerator=accelerator,
            seed=run.seed,
            progress=not args.no_progress,
        )
        results["setting"]["learngene"] = args.learngene
        results["setting"]["revision"] = args.revision
        results["setting"]["processes"] = accelerator.num_processes
        sizes = None
        if run.sizes:
            sizes = compare_sizes(
                learngene,
                collective_model_of(learngene, args.collective_run),
                episodes,
                cfg,
                tune_lr_episodes=tune_episodes,
                lr_grid=run.lr_grid,
                accelerator=accelerator,
                seed=run.seed,
                progress=not args.no_progress,
                **overrides,
            )
    if accelerator.is_main_process:
        print(format_table(results))  # first: a write that fails below loses nothing on screen
        if sizes is not None:
            print(format_sizes_table(sizes["sizes"]))
        try:
            print(f"results: {write_results(results, args.output_dir, plot=not args.no_plot)['results']}")
            if sizes is not None:
                print(f"sizes: {write_sizes(sizes, args.output_dir, plot=not args.no_plot)['results']}")
        except OSError as err:
            raise ArtifactError(
                f"The tables above were measured, but {args.output_dir} cannot be written ({os_error_message(err)}); "
                f"each episode's result is in {journal.own} as far as it could be written: make room and rerun the "
                "same command, which reads them back instead of training again."
            ) from err
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main)
