"""Which few-shot recipe works, measured on OPEN-WORLD classes only (never on the novel classes).

For a learngene from a pipeline run (``RUN/learngene``) this trains descendants and their scratch
twins on open-world episodes with several recipes, each recipe's values (lr, and steps with
--steps-grid) tuned per method by :func:`learngene_hf.fewshot.tuning.tune_recipe` (grid widened once
where the best value is at its edge, and flagged when it stays there). Recipes, each adding one
thing to the one before:

* ``paper``: the paper's schedule (30 epochs, constant lr, batch 32);
* ``steps``: ``--steps`` optimisation steps at a constant lr;
* ``cosine``: + 5 warm-up steps and cosine decay;
* ``lpft``: + the head fitted alone on frozen features for the first fifth of the steps (LP-FT);
* ``default``: + label smoothing 0.1 (the library's default recipe, with ``--steps`` steps).

Methods: ``learngene`` / ``scratch`` (the default descendant: the learngene with the fresh layers
that mirror the collective model) and ``learngene_head`` / ``scratch_head`` (the learngene + a
linear head on 2x2-pooled features; scratch: the same layers, random).

Results accumulate in benchmarks/results/recipe_tuning.{json,md} (one entry per shots, method and
recipe; a rerun replaces the entries it recomputes), so the stages can run one at a time:

    python benchmarks/recipe_tuning.py --run runs/pipeline --shots 5 --episodes 6
    python benchmarks/recipe_tuning.py --run runs/pipeline --recipes default --steps-grid 50,100,200
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import sample_episodes
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.loading import load_fewshot_data
from learngene_hf.fewshot.train import build_individual
from learngene_hf.fewshot.tuning import tune_recipe
from learngene_hf.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"

#: Architecture overrides of each descendant (IndividualConfig.for_learngene arguments).
DESCENDANTS: dict[str, dict[str, Any]] = {"": {}, "_head": {"tail_widths": [], "tail_pool": []}}
METHODS = ("learngene", "scratch", "learngene_head", "scratch_head")
RECIPE_ORDER = ("paper", "steps", "cosine", "lpft", "default")


def recipe(name: str, steps: int) -> FewShotConfig:
    """The recipes compared, each adding one thing to the one before."""
    plain = {"steps": steps, "lp_steps": 0, "warmup_steps": 0, "schedule": "constant", "label_smoothing": 0.0}
    if name == "paper":
        return FewShotConfig.from_recipe("paper", device="cpu")
    if name == "steps":
        return FewShotConfig(**plain, device="cpu")
    if name == "cosine":
        return FewShotConfig(**{**plain, "warmup_steps": 5, "schedule": "cosine"}, device="cpu")
    if name == "lpft":
        return FewShotConfig(**{**plain, "warmup_steps": 5, "schedule": "cosine", "lp_steps": steps // 5}, device="cpu")
    if name == "default":
        return FewShotConfig(steps=steps, lp_steps=steps // 5, device="cpu")
    raise SystemExit(f"unknown recipe {name!r}; choose from {RECIPE_ORDER}")


def builder(learngene: Learngene, method: str):
    inherit = method.startswith("learngene")
    overrides = DESCENDANTS[method[len("learngene") :] if inherit else method[len("scratch") :]]
    return lambda n: build_individual(learngene if inherit else None, n, architecture_of=learngene, **overrides)


def markdown(entries: dict[str, Any]) -> str:
    lines = [
        "Recipe tuning on open-world classes (5-way; mean query accuracy in % over the tuning episodes, "
        "at each method's chosen values; (edge) = chosen value at the edge of its grid after widening).",
        "",
    ]
    for shots in sorted({e["shots"] for e in entries.values()}):
        rows = [e for e in entries.values() if e["shots"] == shots]
        lines += [
            f"### {shots}-shot ({rows[0]['episodes']} open-world episodes)",
            "",
            "| method | " + " | ".join(RECIPE_ORDER) + " |",
            "| --- |" + " --- |" * len(RECIPE_ORDER),
        ]
        for method in METHODS:
            cells = []
            for name in RECIPE_ORDER:
                e = next((e for e in rows if e["method"] == method and e["recipe"] == name), None)
                if e is None:
                    cells.append("-")
                    continue
                chosen = ", ".join(f"{k}={v:g}" for k, v in e["chosen"].items())
                edge = " (edge: " + ", ".join(e["edge"]) + ")" if e["edge"] else ""
                cells.append(f"{100 * e['accuracy']:.1f} ({chosen}){edge}")
            if any(c != "-" for c in cells):
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/pipeline", help="a pipeline output folder (uses RUN/learngene)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=6, help="open-world episodes per grid point")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--recipes", default=",".join(RECIPE_ORDER))
    p.add_argument("--steps", type=int, default=100, help="steps of the step-counted recipes")
    p.add_argument("--lr-grid", default="0.01,0.03,0.1")
    p.add_argument("--steps-grid", default=None, help="also tune steps (not for the paper recipe), e.g. 50,100,200")
    p.add_argument("--widen", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)

    learngene = Learngene.from_pretrained(Path(args.run) / "learngene")
    data, _, open_world = load_fewshot_data(learngene)
    episodes = sample_episodes(
        data, open_world, args.episodes, args.ways, args.shots, args.queries, seed=args.seed + 20_000
    )
    out = Path(args.results)
    path = out / "recipe_tuning.json"
    import json

    saved = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    for method in args.methods.split(","):
        for name in args.recipes.split(","):
            cfg = recipe(name, args.steps)
            grid: dict[str, list[float]] = {"lr": [float(x) for x in args.lr_grid.split(",")]}
            if args.steps_grid and name != "paper":
                grid["steps"] = [int(x) for x in args.steps_grid.split(",")]
            start = time.perf_counter()
            result = tune_recipe(builder(learngene, method), episodes, grid, cfg, seed=args.seed, widen=args.widen)
            key = f"{args.shots}shot/{method}/{name}"
            saved["entries"][key] = {
                "shots": args.shots,
                "method": method,
                "recipe": name,
                "episodes": len(episodes),
                "open_world_classes": open_world,
                "recipe_values": cfg.to_dict(),
                "seconds": time.perf_counter() - start,
                **result.to_dict(),
            }
            print(
                f"{key}: {100 * result.accuracy:.1f}% at {result.chosen} edge={result.edge} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            saved["machine"] = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
            saved["learngene"] = str(Path(args.run) / "learngene")
            write_json_atomic(path, saved)
            write_text_atomic(out / "recipe_tuning.md", markdown(saved["entries"]))
    print(markdown(saved["entries"]))


if __name__ == "__main__":
    main()
