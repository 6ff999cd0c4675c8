"""The trade-off a learngene offers: descendants of every size against what a user gets without it.

    python benchmarks/descendant_sizes.py --run-dir runs/pipeline              # the main job's run
    python benchmarks/descendant_sizes.py --episodes 100 --shots 5,10          # on a GPU

For the collective run and the learngene in ``RUN_DIR`` (``examples/run_pipeline.py`` writes
``RUN_DIR/collective`` and ``RUN_DIR/learngene``), at each shot count, on the same novel-class
5-way episodes, for each named descendant size ("tiny": the learngene and a linear head, "small",
"medium", "full": the collective's size):

* ``learngene``: the descendant of the learngene, fine-tuned with the size's recipe;
* ``scratch``: the same architecture from random initialization, with its own lr tuned;
* ``weight_selection``: the same architecture initialised by weight selection (Xu et al., ICLR
  2024) from the whole collective model, fine-tuned (it inherits its whole size);
* ``logreg_random`` / ``centroid_random``: logistic regression and nearest centroid on the frozen
  features of a random network of that architecture;
* ``logreg_learngene``: logistic regression on the learngene's own frozen features (one row, any size);

and the reference lines a user could take instead: logistic regression on the whole collective
model's features (``logreg_collective``) and the whole backbone fine-tuned (``whole``). Every row
gives its parameters, FLOPs per image and inherited bytes. Learning rates (fine-tuned methods,
the tiny size's linear probe aside) and L2 strengths are picked on open-world episodes, never on
the novel classes. ``--digits`` adds the same comparison on scikit-learn's real handwritten digits
(novel classes 7-9, 3-way, tuned on classes 4-6) for the default size at 5 shots; ``--dataset digits``
runs the whole benchmark there instead (every size and shot count asked for, written to
``descendant_sizes_digits.*``):

    python benchmarks/descendant_sizes.py --run-dir runs/pipeline --dataset digits --sizes tiny,small

Writes ``benchmarks/results/descendant_sizes.{json,md,png}`` (the JSON: ``{"machine", "settings":
[{"shots", "episodes", "sizes": [{"name", "parameters", "parameter_fraction", "flops_per_image",
"methods": {method: {"mean", "ci", "inherited_bytes", ...}}}], "references": {...}}]}``, accuracies
as fractions), updated after every setting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.data import sample_episodes
from learngene_hf.fewshot.compare import compare_methods, format_sizes_table, format_table, size_rows
from learngene_hf.fewshot.config import DEFAULT_SIZE, FewShotConfig
from learngene_hf.fewshot.loading import load_fewshot_data
from learngene_hf.fewshot.methods import baseline_methods, descendant_sizes, size_methods
from learngene_hf.fewshot.runner import Method
from learngene_hf.fewshot.tuning import tuning_episodes
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.machine import machine_record
from learngene_hf.models.individual import IndividualModel
from learngene_hf.plots.sizes import plot_descendant_sizes
from learngene_hf.training.run import load_run

RESULTS = Path(__file__).resolve().parent / "results"
ROW_METHODS = ("learngene", "scratch", "weight_selection", "logreg_random", "centroid_random")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/pipeline", help="folder with collective/ and learngene/")
    parser.add_argument("--episodes", type=int, default=40, help="novel-class episodes per shot count")
    parser.add_argument("--shots", default="5,10", help="shot counts, e.g. 5,10")
    parser.add_argument("--tune-episodes", type=int, default=2, help="open-world episodes per tried value")
    parser.add_argument("--lr-grid", default="0.05,0.1,0.2", help="learning rates tried per fine-tuned method")
    parser.add_argument("--sizes", default="tiny,small,medium,full")
    parser.add_argument(
        "--digits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the 5-shot digits comparison of the default size (embedded data only)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="run the benchmark on this dataset (e.g. digits) instead of the learngene's own data",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="machine load or other remarks for the results")
    parser.add_argument(
        "--output", default=None, help="output path without suffix (default: results/descendant_sizes[_DATASET])"
    )
    return parser.parse_args()


def methods_for(learngene: Learngene, collective: torch.nn.Module, sizes: list[str]) -> list[Method]:
    """Every size's methods, the learngene's own frozen features and the two reference lines."""
    methods = size_methods(learngene, collective, descendant_sizes(sizes))
    methods += baseline_methods(learngene, collective, sources=("learngene", "collective"), classifiers=("logreg",),
                                weight_selection_method=False, size="tiny")  # fmt: skip
    whole = Learngene.from_collective(collective, list(range(collective.config.num_layers)),
                                      preprocessing=dict(learngene.config.preprocessing))  # fmt: skip
    methods.append(Method("whole", lambda n: IndividualModel.from_learngene(whole, n),
                          description="every conv layer of the collective model inherited, fine-tuned"))  # fmt: skip
    return methods


def compare(learngene, collective, data, novel, open_world, args, shots: int, sizes: list[str], ways: int = 5):
    episodes = sample_episodes(data, novel, args.episodes, ways, shots, 15, seed=args.seed)
    tune = tuning_episodes(data, open_world, args.tune_episodes, ways, shots, 15, seed=args.seed)
    grid = {"lr": [float(x) for x in args.lr_grid.split(",")]}
    start = time.perf_counter()
    methods = methods_for(learngene, collective, sizes)
    results = compare_methods(learngene, episodes, FewShotConfig(), methods=methods, tune_lr_episodes=tune,
                              tune_grid=grid, widen=0, seed=args.seed, progress=True)  # fmt: skip
    results["seconds"] = time.perf_counter() - start
    results["sizes"] = size_rows(results)
    return results


def setting_record(results: dict[str, Any], collective_parameters: int) -> dict[str, Any]:
    """The record of one setting: per size its methods, then the references."""

    def brief(m: dict[str, Any]) -> dict[str, Any]:
        keys = ("mean", "ci95", "inherited_bytes", "inherited_parameters", "parameters", "flops_per_image", "lr",
                "settings", "diff_vs_strongest_baseline")  # fmt: skip
        out = {k: m.get(k) for k in keys}
        out["ci"] = out.pop("ci95")
        return out

    methods, sizes = results["methods"], []
    for name in dict.fromkeys(r["size"] for r in results["sizes"]):
        scratch = methods[f"scratch@{name}"]
        entry = {
            "name": name,
            "parameters": scratch["parameters"],
            "parameter_fraction": scratch["parameters"] / collective_parameters,
            "flops_per_image": scratch["flops_per_image"],
            "methods": {k: brief(methods[f"{k}@{name}"]) for k in ROW_METHODS if f"{k}@{name}" in methods},
        }
        # fmt: skip
        entry["methods"]["logreg_learngene"] = brief(methods["logreg_learngene"])
        rows = [r for r in results["sizes"] if r["size"] == name]
        entry["vs_strongest"] = {r["method"]: r["diff_vs_strongest"] for r in rows if r["diff_vs_strongest"]}
        sizes.append(entry)
    s = results["setting"]
    return {"shots": s["shots"], "ways": s["ways"], "episodes": s["episodes"], "seconds": results["seconds"],
            "sizes": sizes, "references": {k: brief(methods[k]) for k in ("logreg_collective", "whole")}}  # fmt: skip


def plot_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The size rows plus the size-free methods (the learngene's and the collective's features, the
    whole backbone) as rows of their own, for the figure."""
    rows = list(results["sizes"])
    for name in ("logreg_learngene", "logreg_collective", "whole"):
        m = results["methods"][name]
        rows.append({"method": name, "size": "reference", "parameters": m["parameters"],
                     "inherited_bytes": m["inherited_bytes"], "mean": m["mean"], "ci95": m["ci95"]})  # fmt: skip
    return rows


def write(report: dict[str, Any], runs: dict[str, Any], out: Path, dataset: str = "embedded data") -> None:
    lines = ["# Descendant sizes: what a learngene is worth at every size", "", report["description"], ""]
    for shots, results in runs.items():
        if shots == "digits":
            s = results["setting"]
            lines += [f"## Digits (real handwritten digits, novel classes 7-9, {s['ways']}-way {s['shots']}-shot, "
                      f"{s['episodes']} episodes)", "", format_table(results), ""]  # fmt: skip
            continue
        s = results["setting"]
        lines += [f"## {s['ways']}-way {shots}-shot, {s['episodes']} episodes", "",
                  format_sizes_table(results["sizes"]), "", "Every method on the same episodes:", "",
                  format_table(results), ""]  # fmt: skip
    write_json_atomic(out.with_suffix(".json"), report)
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines))
    first = next((v for k, v in runs.items() if k != "digits"), None)
    if first is not None:
        s = first["setting"]
        title = f"{dataset}, {s['ways']}-way {s['shots']}-shot, {s['episodes']} episodes"
        plot_descendant_sizes(plot_rows(first), out.with_suffix(".png"), title=title, ways=s["ways"])


def main() -> None:
    args = parse_args()
    run_dir = Path(args.run_dir)
    learngene = Learngene.from_pretrained(run_dir / "learngene")
    collective = load_run(run_dir / "collective").model
    collective_parameters = sum(p.numel() for p in collective.parameters())
    sizes = args.sizes.split(",")
    data, novel, open_world = load_fewshot_data(learngene, args.dataset)
    ways = min(5, len(novel))
    output = Path(args.output or RESULTS / f"descendant_sizes{'_' + args.dataset if args.dataset else ''}")
    report = {
        "machine": machine_record(),
        "description": (
            f"Learngene {learngene.config.layer_names} ({learngene.num_parameters():,} parameters, "
            f"{learngene.num_bytes():,} bytes) of the collective run `{run_dir}` "
            f"({collective_parameters:,} parameters). Dataset: {args.dataset or 'embedded'} "
            f"(novel classes {novel}, tuned on {open_world}). "
            f"Machine: {machine_record().get('device_name') or 'CPU'}, {torch.get_num_threads()} torch threads. "
            f"{args.note} Learning rates from {args.lr_grid} and L2 strengths picked on {args.tune_episodes} "
            "open-world episodes per value; the tiny size's recipe is the linear probe (no lr)."
        ),
        "learngene": learngene.config.layer_names,
        "dataset": args.dataset or "embedded",
        "settings": [],
    }
    runs: dict[Any, Any] = {}
    for shots in (int(x) for x in args.shots.split(",")):
        runs[shots] = compare(learngene, collective, data, novel, open_world, args, shots, sizes, ways=ways)
        report["settings"].append(setting_record(runs[shots], collective_parameters))
        write(report, runs, output, args.dataset or "embedded data")
    if args.digits and args.dataset is None:
        digits, d_novel, d_open = load_fewshot_data(learngene, "digits")
        runs["digits"] = compare(learngene, collective, digits, d_novel, d_open, args, 5, [DEFAULT_SIZE], ways=3)
        runs["digits"]["setting"]["dataset"] = "digits"
        report["digits"] = setting_record(runs["digits"], collective_parameters)
        write(report, runs, output)
    print(output.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
