"""Choose, extract and share the learngene of a collective run.

    python examples/extract_learngene.py                       # runs/collective -> runs/learngene
    python examples/extract_learngene.py RUN_DIR --strategy paper --k 3
    python examples/extract_learngene.py RUN_DIR --layers 0-2 --push-to-hub me/my-learngene
    python examples/extract_learngene.py RUN_DIR --push-to-hub me/lg --hub-endpoint http://127.0.0.1:8080
    python examples/extract_learngene.py RUN_DIR --max-bytes 120000 --distill-epochs 3   # deeper, narrower

Prints the layer ranking, the probed candidates, the chosen layers and why, and the sizes.
"""

from __future__ import annotations

import argparse
import os
from functools import partial

# Only light modules (the standard library, the config dataclasses) are imported before the
# arguments are parsed, so --help answers at once; torch and the models come in main().
os.environ.setdefault("LEARNGENE_HF_DEFER_MODELS", "1")

from learngene_hf.cli import ArgumentParser, add_config_arguments, config_kwargs, run_script  # noqa: E402
from learngene_hf.errors import ConfigError  # noqa: E402
from learngene_hf.selection.config import CRITERIA, STRATEGIES, SelectionConfig, parse_layers  # noqa: E402


def _layers(text: str) -> list[int]:
    try:
        return parse_layers(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (for example '0-2' or '10,11,12')") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument(
        "run_dir", nargs="?", default="runs/collective", help="collective run folder (default runs/collective)"
    )
    parser.add_argument(
        "--output-dir", default="runs/learngene", help="where to save the learngene (default runs/learngene)"
    )
    selection = parser.add_argument_group("selection (learngene_hf.selection.config.SelectionConfig)")
    add_config_arguments(
        selection,
        SelectionConfig,
        choices={"strategy": [s for s in STRATEGIES if s != "layers"], "criterion": list(CRITERIA)},
        parsers={"layers": _layers},
        help={
            "strategy": "validated (open-world probes of candidate blocks), criterion (the best block by the "
            "criterion) or paper (the last k layers); --layers gives an explicit list instead",
            "threshold": "absolute gradient threshold of the 'paper' criterion",
            "from_task": "rank on the tasks with this id or later only",
            "layers": "explicit layers, e.g. '0-2' or '10,11,12' (overrides --strategy)",
            "max_fraction": "skip candidates holding more than this share of the collective model's parameters (0: no "
            "cap)",
            "max_bytes": "a budget of inherited bytes: choose among the first d layers of every depth at the widest "
            "width that fits, on the same open-world probes",
            "distill_epochs": "with --max-bytes, also distill each narrowed candidate from the collective model",
        },
        default_text={
            "threshold": "5e-10",
            "from_task": "every task",
            "layers": "none: --strategy chooses",
            "max_bytes": "none: a block of k full-width layers",
        },
    )
    selection.add_argument(
        "--no-probe-data",
        dest="load_probe_data",
        action="store_false",
        help="do not reload the run's dataset for the probes: the validated strategy then falls back to the criterion",
    )
    hub = parser.add_argument_group("hub")
    hub.add_argument(
        "--push-to-hub", metavar="ORG/NAME", default=None, help="push the learngene (only it) to this repo"
    )
    hub.add_argument(
        "--push-collective-to-hub",
        metavar="ORG/NAME",
        default=None,
        help="also push the whole collective model to this repo (first; it reads HF_ENDPOINT, as every transformers "
        "push does), so the learngene's card names it as its base_model",
    )
    hub.add_argument("--revision", default=None, help="branch to push to (default main)")
    hub.add_argument("--private", action="store_true", help="create the repo as private")
    hub.add_argument("--token", default=None, help="Hub token (default: the logged-in one / HF_TOKEN)")
    hub.add_argument(
        "--hub-endpoint", default=None, help="a self-hosted or local Hub server URL, e.g. http://127.0.0.1:8080"
    )
    return parser.parse_args(argv)


def _select_under_budget(inheritor, cfg: SelectionConfig) -> None:
    """The budget selection: every candidate's bytes and probe accuracy, then the chosen one."""
    from learngene_hf.selection.inheritor import PROBE_OPTIONS

    probe = {name: getattr(cfg, name) for name in PROBE_OPTIONS}
    from learngene_hf.selection.compact import budget_table

    probe["probe_training"] = "a linear probe (the tiny descendant)"
    result = inheritor.select_under_budget(cfg.max_bytes, distill_epochs=cfg.distill_epochs, **probe)
    print(budget_table(result))
    learngene = inheritor.learngene
    print(f"\nChosen {result['chosen']} {learngene.config.layer_names} (widths {learngene.config.widths}): "
          f"{result['reason']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from learngene_hf.io import writable_folder

    writable_folder(args.output_dir, "the output folder (--output-dir)")  # before the selection's probes
    import learngene_hf  # the heavy part: torch, transformers, timm and the selection
    from learngene_hf.fewshot.runner import learngene_probe
    from learngene_hf.selection.inheritor import Inheritor

    learngene_hf.import_models()
    cfg = SelectionConfig(**config_kwargs(args, SelectionConfig))
    if args.push_collective_to_hub and args.hub_endpoint:
        raise ConfigError(
            "--push-collective-to-hub goes through transformers' push_to_hub, which reads HF_ENDPOINT: set "
            f"HF_ENDPOINT={args.hub_endpoint} instead of --hub-endpoint."
        )
    probe_data = args.load_probe_data and cfg.strategy == "validated" and cfg.layers is None
    # under a byte budget the probe is a linear probe (the tiny descendant): fine-tuned probes at one
    # learning rate ranked narrow and distilled candidates unlike the novel classes did
    probe = partial(learngene_probe, size="tiny") if cfg.max_bytes is not None else learngene_probe
    inheritor = Inheritor.from_run(args.run_dir, load_probe_data=probe_data, probe=probe)
    if args.push_collective_to_hub:
        commit = inheritor.push_collective_to_hub(
            args.push_collective_to_hub, revision=args.revision, private=args.private, token=args.token
        )
        print(f"Pushed the collective model to {args.push_collective_to_hub} at commit {commit.oid}")
    if inheritor.is_linear_expansion:
        learngene = inheritor.extract()  # a linear-expansion ViT: the whole base/increment pair, nothing to select
        sizes = learngene.config.sizes
        print(
            f"Linear-expansion learngene (rule {learngene.config.expansion['rule']}): "
            f"{sizes['learngene_parameters']:,} parameters "
            f"({sizes['learngene_bytes'] / 1e6:.2f} MB) of the collective ViT's {sizes['collective_parameters']:,}; "
            "descendants of any depth: learngene_hf.from_learngene(..., num_blocks=L)."
        )
    elif cfg.max_bytes is not None:
        _select_under_budget(inheritor, cfg)
    else:
        settings = cfg.to_dict()
        for name in ("max_bytes", "distill_epochs"):
            settings.pop(name)
        settings["max_fraction"] = cfg.max_fraction or None
        strategy = settings.pop("strategy") if cfg.layers is None else "layers"
        settings.pop("strategy", None)
        selection = inheritor.select(strategy, **settings)
        print(
            f"Layer ranking by '{selection.criterion}' (lower = more stable):"
            if selection.criterion
            else "No gradient record: no ranking."
        )
        print(selection.table())
        if selection.ranking:
            print(
                "\nBest blocks:",
                ", ".join(f"#{r['rank']} {r['layers']} ({r['score']:.4g})" for r in selection.ranking[:5]),
            )
        for cand in selection.candidates:
            if "skipped" in cand:
                print(f"  candidate {cand['layers']} ({'/'.join(cand['origin'])}): not probed, {cand['skipped']}")
            else:
                print(
                    f"  candidate {cand['layers']} ({'/'.join(cand['origin'])}): open-world probe accuracy "
                    f"{100 * cand['mean']:.1f}% +/- {100 * cand['ci95']:.1f} (lr {cand['lr']:g})"
                )
        print(f"\nChosen layers {selection.layers} {selection.chosen_names}: {selection.reason}")
        learngene = inheritor.extract()
        sizes = learngene.config.sizes
        print(
            f"Learngene: {sizes['learngene_parameters']:,} parameters ({sizes['learngene_bytes'] / 1e6:.2f} MB) of the "
            "collective "
            f"model's {sizes['collective_parameters']:,} ({100 * sizes['parameter_fraction']:.1f}%); channels "
            f"{learngene.config.in_channels}->{learngene.config.out_channels}, position '{learngene.config.position}'."
        )
    folder = inheritor.save_pretrained(args.output_dir, repo_id=args.push_to_hub)
    print(
        f"Saved to {folder} (learngene.safetensors, learngene_config.json, README.md"
        f"{'' if inheritor.selection is None else ', layer_ranking.png'})"
    )
    if args.push_to_hub:
        commit = inheritor.push_to_hub(
            args.push_to_hub, revision=args.revision, private=args.private, token=args.token, endpoint=args.hub_endpoint
        )
        print(
            f"Pushed to {args.push_to_hub} at commit {commit.oid}; pull it with "
            f"Learngene.from_pretrained({args.push_to_hub!r}, revision={commit.oid!r})"
        )
    return 0


if __name__ == "__main__":
    run_script(main)
