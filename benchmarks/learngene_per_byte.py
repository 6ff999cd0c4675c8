"""Which learngene carries most per byte: deeper-but-narrower and distilled candidates under one budget.

    python benchmarks/learngene_per_byte.py --run-dir runs/main_job_timing     # the main job's run
    python benchmarks/learngene_per_byte.py --episodes 100 --shots 5,10        # on a GPU

For the collective run and its selected learngene in ``RUN_DIR``, with a budget of inherited bytes
(default: the selected learngene's own bytes):

* candidates (:func:`~learngene_hf.selection.compact.budget_candidates`): the first ``d`` conv
  layers for each depth of ``--depths``, at the widest uniform width that fits the budget (weight
  selection of evenly spaced channels; ``first_d`` at full width, ``narrow_d`` narrowed), and each
  narrowed one distilled from the collective model's map at its depth on the base classes' images
  (``distilled_d``, :func:`~learngene_hf.selection.compact.distill_learngene`);
* the budget selection (:func:`~learngene_hf.selection.compact.select_under_budget`) probes every
  candidate on open-world episodes (the ``small`` descendant, default recipe) and names its pick;
* on the same novel-class episodes at each shot count: every candidate's descendants of
  ``--sizes`` (default tiny = the learngene and a linear head, fitted as a linear probe, and small),
  against the selected learngene's scratch / weight-selection / random-feature baselines of those
  sizes and logistic regression on the whole collective model's features.

Writes ``benchmarks/results/learngene_per_byte.{json,md,png}``, updated after every setting.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import sample_episodes
from learngene_hf.fewshot.compare import compare_methods, format_table, size_rows
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.fewshot.loading import load_fewshot_data
from learngene_hf.fewshot.methods import baseline_methods, descendant_sizes, size_methods
from learngene_hf.fewshot.runner import learngene_probe
from learngene_hf.fewshot.tuning import tuning_episodes
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.machine import machine_record
from learngene_hf.plots.sizes import plot_descendant_sizes
from learngene_hf.selection.compact import budget_candidates, distill_learngene, select_under_budget
from learngene_hf.stats import paired_difference
from learngene_hf.training.run import load_run

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/pipeline", help="folder with collective/ and learngene/")
    parser.add_argument("--budget", type=int, default=None, help="inherited bytes (default: the learngene's)")
    parser.add_argument("--depths", default="3,4,5,6", help="depths of the input-end candidates")
    parser.add_argument("--distill-epochs", type=int, default=3, help="0: no distilled candidates")
    parser.add_argument("--probe-episodes", type=int, default=8, help="open-world episodes of the budget selection")
    parser.add_argument("--probe-lr", type=float, default=0.1, help="learning rate of the fine-tuned probes")
    parser.add_argument(
        "--probe-sizes",
        default="small",
        help="descendant sizes probed, e.g. tiny,small (tiny: a "
        "linear probe); each gives a budget selection, the first one is reported as the choice",
    )
    parser.add_argument("--save-candidates", default=None, help="save every candidate learngene under this folder")
    parser.add_argument("--load-candidates", default=None, help="reuse the candidates saved there (no distillation)")
    parser.add_argument("--episodes", type=int, default=40, help="novel-class episodes per shot count")
    parser.add_argument("--shots", default="5,10", help="shot counts, e.g. 5,10")
    parser.add_argument("--tune-episodes", type=int, default=2, help="open-world episodes per tried value")
    parser.add_argument("--lr-grid", default="0.05,0.1,0.2", help="learning rates tried per fine-tuned method")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="machine load or other remarks for the results")
    parser.add_argument("--output", default=str(RESULTS / "learngene_per_byte"))
    return parser.parse_args()


def candidates_for(learngene: Learngene, collective: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The candidates under the budget, the distilled ones included, and the seconds distillation took."""
    budget = args.budget or learngene.num_bytes()
    if args.load_candidates:
        folders = sorted(p for p in Path(args.load_candidates).iterdir() if p.is_dir())
        order = {"first": 0, "narrow": 1, "distilled": 2}
        folders.sort(key=lambda p: (order.get(p.name.split("_")[0], 3), p.name))
        return {"budget": budget, "learngenes": {p.name: Learngene.from_pretrained(p) for p in folders},
                "distill_seconds": 0.0}  # fmt: skip
    meta = {"task_stream": dict(learngene.config.task_stream), "preprocessing": dict(learngene.config.preprocessing)}
    found = budget_candidates(collective, budget, [int(d) for d in args.depths.split(",")], **meta)
    base = data.select([int(c) for c in learngene.config.task_stream.get("classes") or []]).images
    start = time.perf_counter()
    for name in [n for n in found if n.startswith("narrow_") and args.distill_epochs > 0]:
        print(f"distilling {name} on {len(base)} base-class images, {args.distill_epochs} epochs", flush=True)
        found[name.replace("narrow_", "distilled_")] = distill_learngene(
            found[name], collective, base, epochs=args.distill_epochs, seed=args.seed
        )
    if args.save_candidates:
        for name, candidate in found.items():
            candidate.save_pretrained(Path(args.save_candidates) / name)
    return {"budget": budget, "learngenes": found, "distill_seconds": time.perf_counter() - start}


def methods_for(candidates: dict[str, Learngene], reference: Learngene, collective: Any, sizes: list[str]):
    """Every candidate's descendants of ``sizes``, the reference's baselines of those sizes, and
    logistic regression on the whole collective model's features."""
    named = descendant_sizes(sizes)
    methods = []
    for name, learngene in candidates.items():
        for method in size_methods(learngene, None, named):
            kind, _, size = method.name.partition("@")
            if kind == "learngene":
                methods.append(replace(method, name=f"{name}@{size}", description=f"{method.description} {name}"))
    # learngene@SIZE is the first_3 candidate; weight selection into tiny takes exactly its layers.
    skip = ("learngene@", "weight_selection@tiny")
    methods += [m for m in size_methods(reference, collective, named) if not m.name.startswith(skip)]
    methods += baseline_methods(reference, collective, sources=("collective",), classifiers=("logreg",),
                                weight_selection_method=False, size="tiny")  # fmt: skip
    return methods


def versus(results: dict[str, Any], reference: str) -> dict[str, dict[str, float]]:
    """Every method's paired difference (mean, 95% CI half-width) to ``reference`` on the same episodes."""
    ref = results["methods"][reference]["accuracies"]
    out = {}
    for name, m in results["methods"].items():
        if name != reference:
            mean, half = paired_difference(m["accuracies"], ref)
            out[name] = {"mean": mean, "ci95": half}
    return out


def candidate_table(
    selections: dict[str, Any], rows: list[dict[str, Any]], candidates: dict[str, Learngene], vs: dict | None = None
) -> str:
    """Markdown: per candidate its widths, bytes, open-world probe accuracy with each probed size
    (the first probe's choice marked) and its descendants' results on the novel classes (``rows``)."""
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    first = next(iter(selections.values()))
    head = "| candidate | widths | inherited bytes | " + "".join(f"probe ({p}) | " for p in selections)
    head += " | ".join(
        f"{s}: accuracy (vs strongest that inherits nothing) | {s}: vs logreg_collective | {s}: parameters, FLOPs/image"
        for s in sizes
    )
    lines = [
        head.rstrip(" |") + " |",
        "| --- | --- | ---: |" + " --- |" * len(selections) + " --- | --- | ---: |" * len(sizes),
    ]
    for name, learngene in candidates.items():
        mark = " **(chosen)**" if name == first["chosen"] else ""
        cells = [f"{name}{mark}", "-".join(str(w) for w in learngene.config.widths), f"{learngene.num_bytes():,}"]
        for selection in selections.values():
            probe = selection["candidates"][name]
            cells.append(f"{100 * probe['mean']:.1f} +/- {100 * probe['ci95']:.1f}" if "mean" in probe else "-")
        for size in sizes:
            row = next(r for r in rows if r["method"] == name and r["size"] == size)
            d = row["diff_vs_strongest"]
            vs_text = f" ({d['mean'] * 100:+.1f} +/- {100 * (d['ci95'] or 0):.1f} vs {d['baseline']})" if d else ""
            flops = row.get("flops_per_image") or 0
            ref = (vs or {}).get(row["name"])
            ref_text = f"{100 * ref['mean']:+.1f} +/- {100 * ref['ci95']:.1f}" if ref else "-"
            cells += [f"{100 * row['mean']:.1f} +/- {100 * row['ci95']:.1f}{vs_text}", ref_text,
                      f"{row['parameters']:,}, {flops / 1e6:.1f} M"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(report: dict[str, Any], runs: dict[int, Any], found: dict[str, Any], out: Path) -> None:
    lines = ["# Which learngene carries most per byte", "", report["description"], ""]
    lines += [f"Budget selection, probes with the {size} descendant: {sel['reason']}" for size, sel in
              report["selections"].items()] + [""]  # fmt: skip
    if not runs:
        lines += [candidate_table(report["selections"], [], found["learngenes"]), ""]
    for shots, results in runs.items():
        s = results["setting"]
        lines += [f"## {s['ways']}-way {shots}-shot, {s['episodes']} episodes", "",
                  candidate_table(report["selections"], results["sizes"], found["learngenes"],
                                  versus(results, "logreg_collective")), "",
                  "Every method on the same episodes:", "", format_table(results), ""]  # fmt: skip
    write_json_atomic(out.with_suffix(".json"), report)
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines))
    if not runs:
        return
    shots, first = next(iter(runs.items()))
    rows = list(first["sizes"])
    m = first["methods"]["logreg_collective"]
    rows.append({"method": "logreg_collective", "size": "reference", "parameters": m["parameters"],
                 "inherited_bytes": m["inherited_bytes"], "mean": m["mean"], "ci95": m["ci95"]})  # fmt: skip
    title = f"learngenes under {found['budget']:,} bytes, {first['setting']['ways']}-way {shots}-shot"
    plot_descendant_sizes(rows, out.with_suffix(".png"), title=title, ways=first["setting"]["ways"])


def main() -> None:
    args = parse_args()
    run_dir = Path(args.run_dir)
    learngene = Learngene.from_pretrained(run_dir / "learngene")
    collective = load_run(run_dir / "collective").model
    data, novel, open_world = load_fewshot_data(learngene)
    found = candidates_for(learngene, collective, data, args)
    probes = tuning_episodes(data, open_world, args.probe_episodes, 5, 5, 15, seed=args.seed + 1)
    selections = {}
    for size in args.probe_sizes.split(","):

        def probe(lg: Learngene, size: str = size) -> list[float]:
            return learngene_probe(lg, probes, args.probe_lr, 0, seed=args.seed, size=size)

        start = time.perf_counter()
        selections[size] = select_under_budget(found["learngenes"], probe, found["budget"])
        selections[size]["seconds"] = time.perf_counter() - start
        print(f"probes with the {size} descendant: {selections[size]['reason']}", flush=True)
    selection = next(iter(selections.values()))
    report = {
        "machine": machine_record(),
        "description": (
            f"Collective run `{run_dir}`; selected learngene {learngene.config.layer_names} "
            f"({learngene.num_bytes():,} bytes). Budget {found['budget']:,} inherited bytes. "
            + (
                f"Candidates loaded from `{args.load_candidates}`; "
                if args.load_candidates
                else f"Candidates distilled for {args.distill_epochs} epochs on the base classes' images "
                f"({found['distill_seconds']:.0f} s); "
            )
            + f"probed on {args.probe_episodes} open-world 5-way 5-shot episodes (descendant sizes {args.probe_sizes}; "
            f"fine-tuned at lr {args.probe_lr:g}). Machine: {machine_record().get('device_name') or 'CPU'}, "
            f"{torch.get_num_threads()} torch threads. {args.note} Learning rates from {args.lr_grid} and L2 "
            f"strengths picked on {args.tune_episodes} open-world episodes per value; the tiny size is a linear probe."
        ),
        "budget": found["budget"],
        "candidates": {
            name: {
                "layers": lg.config.layer_names,
                "widths": lg.config.widths,
                "bytes": lg.num_bytes(),
                "parameters": lg.num_parameters(),
                "distillation": lg.config.source.get("distillation"),
            }
            for name, lg in found["learngenes"].items()
        },  # fmt: skip
        "selection": selection,
        "selections": selections,
        "settings": [],
    }
    runs: dict[int, Any] = {}
    grid = {"lr": [float(x) for x in args.lr_grid.split(",")]}
    methods = methods_for(found["learngenes"], learngene, collective, args.sizes.split(","))
    for shots in (int(x) for x in args.shots.split(",") if x.strip()):
        episodes = sample_episodes(data, novel, args.episodes, 5, shots, 15, seed=args.seed)
        tune = tuning_episodes(data, open_world, args.tune_episodes, 5, shots, 15, seed=args.seed)
        begin = time.perf_counter()
        results = compare_methods(learngene, episodes, FewShotConfig(), methods=methods, tune_lr_episodes=tune,
                                  tune_grid=grid, widen=0, seed=args.seed, progress=True)  # fmt: skip
        results["seconds"] = time.perf_counter() - begin
        results["sizes"] = size_rows(results)
        runs[shots] = results
        keep = ("mean", "ci95", "parameters", "flops_per_image", "inherited_bytes", "lr", "diff_vs_strongest")
        report["settings"].append({"shots": shots, "episodes": args.episodes, "seconds": results["seconds"],
                                   "rows": [{k: r.get(k) for k in ("name", *keep)} for r in results["sizes"]],
                                   "logreg_collective": {k: results["methods"]["logreg_collective"].get(k)
                                                         for k in ("mean", "ci95", "inherited_bytes")},
                                   "accuracies": {n: m["accuracies"] for n, m in results["methods"].items()},
                                   "vs_logreg_collective": versus(results, "logreg_collective")})  # fmt: skip
        write(report, runs, found, Path(args.output))
    if not runs:
        write(report, runs, found, Path(args.output))
    print(Path(args.output).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
