"""Choose, extract and share the learngene of a collective run.

    python examples/extract_learngene.py                       # runs/collective -> runs/learngene
    python examples/extract_learngene.py RUN_DIR --strategy paper --k 3
    python examples/extract_learngene.py RUN_DIR --layers 0-2 --push-to-hub me/my-learngene
    python examples/extract_learngene.py RUN_DIR --push-to-hub me/lg --hub-endpoint http://127.0.0.1:8080

Prints the layer ranking, the probed candidates, the chosen layers and why, and the sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from learngene_hf.criterion import CRITERIA, DEFAULT_CRITERION, DEFAULT_K, STRATEGIES, parse_layers
from learngene_hf.inheritor import DEFAULT_MAX_FRACTION, DEFAULT_PROBE_LRS, Inheritor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", default="runs/collective", help="collective run folder (default runs/collective)")
    parser.add_argument("--output-dir", default="runs/learngene", help="where to save the learngene (default runs/learngene)")
    parser.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "layers"], default="validated",
                        help="validated (default: open-world probes), criterion, or paper (last k layers)")
    parser.add_argument("--criterion", choices=CRITERIA, default=DEFAULT_CRITERION, help=f"ranking criterion (default {DEFAULT_CRITERION})")
    parser.add_argument("--threshold", type=float, default=None, help="absolute threshold of the 'paper' criterion (default 5e-10)")
    parser.add_argument("--from-task", type=int, default=None, help="rank on tasks >= this id only")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help=f"layers per learngene (default {DEFAULT_K})")
    parser.add_argument("--layers", default=None, help="explicit layers, e.g. '0-2' or '10,11,12' (overrides --strategy)")
    parser.add_argument("--probe-episodes", type=int, default=4, help="open-world probe episodes per candidate (default 4)")
    parser.add_argument("--probe-epochs", type=int, default=30, help="epochs of each probe (default 30)")
    parser.add_argument("--probe-shots", type=int, default=5, help="shots of each probe episode (default 5)")
    parser.add_argument("--probe-queries", type=int, default=15, help="query images per class of each probe episode (default 15)")
    parser.add_argument("--probe-ways", type=int, default=5, help="ways of each probe episode (default 5; capped at the open-world classes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="push the learngene (only it) to this repo")
    parser.add_argument("--revision", default=None, help="branch to push to (default main)")
    parser.add_argument("--probe-lrs", default=",".join(f"{lr:g}" for lr in DEFAULT_PROBE_LRS),
                        help="learning rates each candidate is probed with; its best counts (default %(default)s)")
    parser.add_argument("--max-fraction", type=float, default=DEFAULT_MAX_FRACTION,
                        help="skip candidates holding more than this share of the collective model's parameters "
                             "(default 1/3; 0 = no cap)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one / HF_TOKEN)")
    parser.add_argument("--hub-endpoint", default=None, help="a self-hosted or local Hub server URL, e.g. http://127.0.0.1:8080")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inheritor = Inheritor.from_run(args.run_dir, load_probe_data=args.strategy == "validated" and args.layers is None)
    if args.layers is not None:
        selection = inheritor.select("layers", layers=parse_layers(args.layers), criterion=args.criterion,
                                     threshold=args.threshold, from_task=args.from_task)
    else:
        selection = inheritor.select(
            args.strategy, k=args.k, criterion=args.criterion, threshold=args.threshold, from_task=args.from_task,
            probe_episodes=args.probe_episodes, probe_epochs=args.probe_epochs, probe_shots=args.probe_shots, probe_ways=args.probe_ways, probe_queries=args.probe_queries,
            probe_lrs=[float(x) for x in args.probe_lrs.split(",")], max_fraction=args.max_fraction or None, seed=args.seed,
        )
    print(f"Layer ranking by '{selection.criterion}' (lower = more stable):" if selection.criterion else "No gradient record: no ranking.")
    print(selection.table())
    if selection.ranking:
        print("\nBest blocks:", ", ".join(f"#{r['rank']} {r['layers']} ({r['score']:.4g})" for r in selection.ranking[:5]))
    for cand in selection.candidates:
        if "skipped" in cand:
            print(f"  candidate {cand['layers']} ({'/'.join(cand['origin'])}): not probed, {cand['skipped']}")
        else:
            print(f"  candidate {cand['layers']} ({'/'.join(cand['origin'])}): open-world probe accuracy "
                  f"{100 * cand['mean']:.1f}% +/- {100 * cand['ci95']:.1f} (lr {cand['lr']:g})")
    print(f"\nChosen layers {selection.layers} {selection.chosen_names}: {selection.reason}")
    learngene = inheritor.extract()
    sizes = learngene.config.sizes
    print(f"Learngene: {sizes['learngene_parameters']:,} parameters ({sizes['learngene_bytes'] / 1e6:.2f} MB) of the collective "
          f"model's {sizes['collective_parameters']:,} ({100 * sizes['parameter_fraction']:.1f}%); channels "
          f"{learngene.config.in_channels}->{learngene.config.out_channels}, position '{learngene.config.position}'.")
    folder = inheritor.save_pretrained(args.output_dir, repo_id=args.push_to_hub)
    print(f"Saved to {folder} (learngene.safetensors, learngene_config.json, README.md, layer_ranking.png)")
    if args.push_to_hub:
        endpoint = contextlib.nullcontext()
        if args.hub_endpoint:
            from learngene_hf.testing.hub import use_endpoint

            endpoint = use_endpoint(args.hub_endpoint)
        with endpoint:
            commit = inheritor.push_to_hub(args.push_to_hub, revision=args.revision, private=args.private, token=args.token)
        print(f"Pushed to {args.push_to_hub} at commit {commit.oid}; pull it with Learngene.from_pretrained({args.push_to_hub!r}, revision={commit.oid!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
