"""How well does the collective model remember its tasks and recognise the unknown?

Three stages, on the embedded procedural dataset with the "small" preset:

``--stage tune`` chooses the forgetting-control settings on a short stream drawn from the
**open-world** classes only (never the base classes the benchmark reports on): the EWC weight
grid, BatchNorm freezing points and replay sizes, each a separate run (``--combine``: also every
BatchNorm point with every replay size). Writes ``benchmarks/results/collective_memory_tuning.{json,md}``.

The tuning also picks the **tuned choice**: the variant with the lowest mean forgetting among those
whose mean accuracy right after learning stays within 0.05 of no control and whose wall time is
at most 1.3x no control's (the time budget); no control when none qualifies.

``--stage compare`` runs the stream on the base classes (by default the preset's 15 tasks; the
stream options shorten it) once per variant - no control, BatchNorm frozen + replay, BatchNorm
frozen, replay, replay with the open-world statistics rebuilt from its exemplars, EWC (the tuned
weight), the tuned choice and the "small" preset's default - one after another in this process
(so that background load hits them alike), and writes
``benchmarks/results/collective_memory.{json,md}`` and ``benchmarks/results/collective_memory.png``
(accuracy per task), updated after every variant. The run folders stay in ``--runs-dir``.
``--only`` runs some variants, in the order given, keeping the earlier rows of the same stream.

``--stage fewshot`` checks that the learngene does not suffer: the first block and the paper's
block of the run without control (``--old-run``) and of the run with the tuned choice or the new
default (``--new-run``), each as a fine-tuned descendant (``--recipe``) and as logistic regression on its
frozen features, on the same novel-class episodes; paired differences new - old. Writes
``benchmarks/results/collective_memory_fewshot.{json,md}``.

    python benchmarks/collective_memory.py --stage tune --tune-tasks 5 --tune-epochs 4 --tune-images 100 \
        --ewc-grid 0.1 1 3 --bn-grid 3 --replay-grid 20 --combine
    python benchmarks/collective_memory.py --stage compare --only "preset default" "no control"
    python benchmarks/collective_memory.py --stage fewshot
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from learngene_hf.data import split_classes
from learngene_hf.errors import DataError
from learngene_hf.io import read_json, write_json_atomic, write_text_atomic
from learngene_hf.plots.memory import plot_open_world_aurocs, plot_task_accuracy
from learngene_hf.training.config import (
    OPEN_WORLD_SCORES,
    OUTLIER_EXPOSURE_HEADS,
    PRESET_TRAINING_DEFAULTS,
    CollectiveTrainingConfig,
)
from learngene_hf.training.trainer import train_collective

RESULTS = Path(__file__).resolve().parent / "results"
#: Set by ``--tag``: results go to ``collective_memory{TAG}_*`` (e.g. "_open_world") beside the others.
TAG = ""


def out(name: str) -> Path:
    """The results file ``collective_memory{TAG}{name}``, e.g. ``out("_tuning.json")``."""
    return RESULTS / f"collective_memory{TAG}{name}"


OFF = {
    "bn_freeze_after": 0,
    "ewc_weight": 0.0,
    "replay_per_class": 0,
    "open_world_from_replay": False,
    "outlier_exposure": 0.0,
    "outlier_exposure_heads": "current",
}
SETTINGS = (
    "bn_freeze_after",
    "ewc_weight",
    "replay_per_class",
    "replay_selection",
    "replay_batch_size",
    "open_world_from_replay",
    "outlier_exposure",
    "outlier_exposure_heads",
    "epochs_per_task",
)


def run_variant(name: str, overrides: dict[str, Any], runs_dir: Path, **stream: Any) -> dict[str, Any]:
    """Train one variant from scratch; returns its summary row (and the per-task accuracies)."""
    config = CollectiveTrainingConfig.for_preset("small", **stream, **overrides)
    start = time.perf_counter()
    try:
        run = train_collective(config, runs_dir / name, resume=False, progress=False)
    except DataError as err:  # NaN scores: the run diverged
        print(f"{name:>18}: diverged ({err})", flush=True)
        return diverged_row(name, runs_dir / name, config, str(err), time.perf_counter() - start)
    wall = time.perf_counter() - start
    report = run.report
    row = {
        "variant": name,
        "settings": {k: getattr(config, k) for k in SETTINGS},
        "mean_forgetting": report["mean_forgetting"],
        "mean_accuracy_after": report["mean_accuracy_after"],
        "mean_accuracy_end": report["mean_accuracy_end"],
        "open_world_auroc": report["mean_open_world_aurocs"],
        "images_per_second": report["images_per_second"],
        "train_seconds": sum(t["train_seconds"] for t in report["tasks"]),
        "wall_seconds": wall,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "accuracy_after": [t["accuracy_after"] for t in report["tasks"]],
        "accuracy_end": [t["accuracy_end"] for t in report["tasks"]],
        "run_dir": str(runs_dir / name),
    }
    auroc = " ".join(f"{k} {v:.3f}" for k, v in row["open_world_auroc"].items())
    print(
        f"{name:>18}: forgetting {row['mean_forgetting']:.3f}, end acc {row['mean_accuracy_end']:.3f}, "
        f"after {row['mean_accuracy_after']:.3f}, AUROC {auroc}, {row['images_per_second']:.0f} img/s, "
        f"{wall:.0f} s",
        flush=True,
    )
    return row


def warm_up(runs_dir: Path, **stream: Any) -> None:
    """One short untimed run (1 task, 1 epoch, 10 images per class) so that the first timed variant
    does not pay for first-call costs (kernel selection, allocator, caches) alone."""
    short = dict(stream, num_tasks=1, epochs_per_task=1, train_per_class=10)
    config = CollectiveTrainingConfig.for_preset("small", **short, **OFF)
    train_collective(config, runs_dir / "warm-up", resume=False, progress=False)


def diverged_row(
    name: str, run_dir: Path, config: CollectiveTrainingConfig, error: str, wall: float | None
) -> dict[str, Any]:
    """The row of a run that diverged: what its last checkpoint says about the tasks it finished
    (accuracy right after learning, last-epoch loss and EWC penalty) and the first task whose
    training loss was no longer finite."""
    state = read_json(run_dir / "checkpoint" / "state.json")
    tasks = state["tasks"]
    finite = [all(math.isfinite(x) for x in t["epoch_losses"] + t["epoch_ewc_penalties"]) for t in tasks]
    return {
        "variant": name,
        "diverged": error,
        "wall_seconds": wall,
        "settings": {k: getattr(config, k) for k in SETTINGS},
        "finished_tasks": len(tasks),
        "first_bad_task": finite.index(False) if False in finite else None,
        "accuracy_after": [t["accuracy_after"] for t in tasks],
        "last_epoch_loss": [t["epoch_losses"][-1] for t in tasks],
        "last_epoch_ewc_penalty": [t["epoch_ewc_penalties"][-1] for t in tasks],
        "run_dir": str(run_dir),
    }


def _table(rows: list[dict[str, Any]], reference: str | None) -> list[str]:
    scores = [s for s in OPEN_WORLD_SCORES if any(s in r.get("open_world_auroc", {}) for r in rows)]
    ref = next((r for r in rows if r["variant"] == reference), None)
    head = ["variant", "settings", "mean forgetting", "final acc.", "acc. after learning"]
    head += [f"AUROC {s}" for s in scores] + ["images/s", "wall s", "wall vs no control"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["settings"]
        settings = (
            (f"BN frozen from task {s['bn_freeze_after']}" if s["bn_freeze_after"] else "BN trains")
            + (f", EWC {s['ewc_weight']:g}" if s["ewc_weight"] else "")
            + (
                f", replay {s['replay_per_class']}/class ({s['replay_selection']}, {s['replay_batch_size']}/batch)"
                if s["replay_per_class"]
                else ""
            )
            + (", open-world statistics from replay" if s.get("open_world_from_replay") else "")
            + (
                f", outlier exposure {s['outlier_exposure']:g} ({s['outlier_exposure_heads']} head"
                + ("s)" if s["outlier_exposure_heads"] == "all" else ")")
                if s.get("outlier_exposure")
                else ""
            )
            + f", {s['epochs_per_task']} epochs"
        )
        if r.get("diverged"):
            where = (
                f"diverged: EWC penalty / loss not finite from task {r['first_bad_task']}"
                if r.get("first_bad_task") is not None
                else "diverged (NaN)"
            )
            lines.append("| " + " | ".join([r["variant"], settings, where] + ["-"] * (len(head) - 3)) + " |")
            continue
        cells = [
            r["variant"],
            settings,
            f"{r['mean_forgetting']:.3f}",
            f"{r['mean_accuracy_end']:.3f}",
            f"{r['mean_accuracy_after']:.3f}",
        ]
        cells += [f"{r['open_world_auroc'][k]:.3f}" if k in r["open_world_auroc"] else "-" for k in scores]
        ratio = f"{r['wall_seconds'] / ref['wall_seconds']:.2f}x" if ref else "-"
        cells += [f"{r['images_per_second']:.0f}", f"{r['wall_seconds']:.0f}", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def tune(args: argparse.Namespace) -> None:
    split = split_classes(100, seed=0)
    stream = dict(
        num_tasks=args.tune_tasks,
        epochs_per_task=args.tune_epochs,
        train_per_class=args.tune_images,
        batch_size=args.batch_size or 64,
        base=list(split.open_world),
        open_world=[],
        novel=[],
    )
    grid: list[tuple[str, dict[str, Any]]] = [("no control", dict(OFF))]
    grid += [(f"EWC {w:g}", dict(OFF, ewc_weight=w)) for w in args.ewc_grid]
    grid += [(f"BN frozen from {k}", dict(OFF, bn_freeze_after=k)) for k in args.bn_grid]
    grid += [(f"replay {m}", dict(OFF, replay_per_class=m)) for m in args.replay_grid]
    if args.combine:
        grid += [
            (f"BN frozen from {k} + replay {m}", dict(OFF, bn_freeze_after=k, replay_per_class=m))
            for k in args.bn_grid
            for m in args.replay_grid
        ]
        grid += [
            (
                f"BN frozen from {k} + replay {m} + statistics from replay",
                dict(OFF, bn_freeze_after=k, replay_per_class=m, open_world_from_replay=True),
            )
            for k in args.bn_grid
            for m in args.replay_grid
        ]
    if args.oe_grid:  # outlier exposure needs replay: the reference is replay alone
        m = args.replay_per_class
        grid += [(f"replay {m}", dict(OFF, replay_per_class=m))] if m not in args.replay_grid else []
        grid += [
            (f"replay {m} + OE {w:g} ({heads})", dict(OFF, replay_per_class=m, outlier_exposure=w,
                                                  outlier_exposure_heads=heads))
            for w in args.oe_grid
            for heads in args.oe_heads
        ]  # fmt: skip
    if args.only:
        grid = [(n, o) for n, o in grid if any(key in n for key in args.only)]
    rows = []
    previous = out("_tuning.json")
    if not any(n == "no control" for n, _ in grid) and previous.is_file():
        # reuse earlier rows of the same stream (e.g. the reference) when only some variants are rerun
        old = read_json(previous)
        if old.get("stream") == stream:
            rows = [r for r in old["rows"] if r["variant"] not in {n for n, _ in grid}]
    warm_up(args.runs_dir / "tune", **stream)
    for name, overrides in grid:
        rows.append(run_variant(name, overrides, args.runs_dir / "tune", **stream))
        rows.sort(key=lambda r: (r["settings"]["ewc_weight"], r["variant"]))
        write_tuning(rows, stream, args.note)


def write_tuning(rows: list[dict[str, Any]], stream: dict[str, Any], note: str) -> None:
    """Write collective_memory_tuning.{json,md} from the tuning rows (the first is no control)."""
    ewc_rows = [r for r in rows if r["settings"]["ewc_weight"] > 0]
    reference = next(r for r in rows if r["variant"] == "no control")
    best = best_ewc_weight(reference, ewc_rows) if ewc_rows else None
    choice = best_variant(reference, rows)
    result = {
        "stage": "tune",
        "stream": stream,
        "rows": rows,
        "machine": _machine(),
        "note": note,
        "best_ewc_weight": best,
        "tuned_choice": {"variant": choice["variant"], "settings": {k: choice["settings"][k] for k in OFF}},
    }
    open_world = best_open_world(reference, rows)
    if open_world is not None:
        result["open_world_choice"] = {
            "variant": open_world["variant"],
            "settings": {k: open_world["settings"][k] for k in OFF},
            "score": open_world["score"],
            "auroc": open_world["auroc"],
        }
    write_json_atomic(out("_tuning.json"), result)
    md = [
        "# Collective memory: tuning on the open-world classes",
        "",
        f"Stream: {stream['num_tasks']} five-way tasks drawn from the 16 open-world classes of the embedded dataset "
        f"(never the base classes), {stream['epochs_per_task']} epochs, {stream['train_per_class']} images per "
        f"class; small preset. Machine: {_machine()}. {note}",
        "",
    ]
    verdict = (f"Chosen EWC weight: {best:g}" if best is not None else "No EWC weight qualifies") + (
        " (the rule: lowest mean forgetting among the weights that keep the mean accuracy right after learning "
        "within 0.05 of no control)."
    )
    verdict += (
        f" Tuned choice: {choice['variant']} (lowest mean forgetting among the variants within 0.05 of no "
        "control's accuracy right after learning and at most 1.3x its wall time)."
    )
    if open_world is not None:
        verdict += (
            f" Open-world choice: {open_world['variant']} scored with {open_world['score']} (AUROC "
            f"{open_world['auroc']:.3f}; the highest mean AUROC of any score among the variants with mean forgetting "
            "<= 0.15, accuracy right after learning within 0.05 of no control and at most 1.3x its wall time)."
        )
    md += _table(rows, "no control") + ["", verdict, ""]
    write_text_atomic(out("_tuning.md"), "\n".join(md))
    print("\n".join(md))


def best_ewc_weight(reference: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    """The EWC weight with the lowest mean forgetting among those whose mean accuracy right after
    learning stays within 0.05 of ``reference`` (no control); None if none does."""
    rows = [r for r in rows if not r.get("diverged")]
    if not rows:
        return None
    ok = [r for r in rows if r["mean_accuracy_after"] >= reference["mean_accuracy_after"] - 0.05]
    if not ok:
        return None
    return min(ok, key=lambda r: r["mean_forgetting"])["settings"]["ewc_weight"]


def eligible(reference: dict[str, Any], rows: list[dict[str, Any]], max_slowdown: float = 1.3) -> list[dict[str, Any]]:
    """The rows that finished, keep the mean accuracy right after learning within 0.05 of
    ``reference`` (no control) and take at most ``max_slowdown`` times its wall time."""
    return [
        r
        for r in rows
        if not r.get("diverged")
        and r["mean_accuracy_after"] >= reference["mean_accuracy_after"] - 0.05
        and r["wall_seconds"] <= max_slowdown * reference["wall_seconds"]
    ]


def best_open_world(
    reference: dict[str, Any], rows: list[dict[str, Any]], max_slowdown: float = 1.3, max_forgetting: float = 0.15
) -> dict[str, Any] | None:
    """The (variant, score) pair with the highest mean open-world AUROC among the :func:`eligible`
    rows that forget at most ``max_forgetting``: the row with ``"score"`` and ``"auroc"`` added,
    or None when no row qualifies."""
    best = None
    for r in eligible(reference, rows, max_slowdown):
        if r["mean_forgetting"] > max_forgetting:
            continue
        for score, value in r["open_world_auroc"].items():
            if value is not None and (best is None or value > best["auroc"]):
                best = dict(r, score=score, auroc=value)
    return best


def best_variant(reference: dict[str, Any], rows: list[dict[str, Any]], max_slowdown: float = 1.3) -> dict[str, Any]:
    """The row with the lowest mean forgetting among those that finished, keep the mean accuracy
    right after learning within 0.05 of ``reference`` and take at most ``max_slowdown`` times its
    wall time (:func:`eligible`); ``reference`` itself when none does better."""
    return min(eligible(reference, rows, max_slowdown) + [reference], key=lambda r: r["mean_forgetting"])


def compare(args: argparse.Namespace) -> None:
    default = {k: PRESET_TRAINING_DEFAULTS["small"].get(k, v) for k, v in OFF.items()}
    variants: list[tuple[str, Any]] = [
        ("no control", dict(OFF)),
        ("BN frozen + replay", dict(OFF, bn_freeze_after=args.bn_freeze_after, replay_per_class=args.replay_per_class)),
        ("BN frozen", dict(OFF, bn_freeze_after=args.bn_freeze_after)),
        ("replay", dict(OFF, replay_per_class=args.replay_per_class)),
        (
            "replay + statistics from replay",
            dict(OFF, replay_per_class=args.replay_per_class, open_world_from_replay=True),
        ),
        ("EWC", None),  # weight read from the tuning results when this variant starts
        ("tuned choice", None),  # settings read from the tuning results
        (
            "replay + outlier exposure",
            dict(
                OFF,
                replay_per_class=args.replay_per_class,
                outlier_exposure=args.outlier_exposure,
                outlier_exposure_heads=args.outlier_exposure_heads,
            ),
        ),
        ("open-world choice", None),  # settings read from the tuning results
        ("preset default", {}),
    ]
    if args.only:  # in the order given
        variants = [
            next(v for v in variants if v[0] == name) for name in args.only if any(v[0] == name for v in variants)
        ]
    stream = {
        k: v
        for k, v in (
            ("num_tasks", args.num_tasks),
            ("train_per_class", args.images_per_class),
            ("epochs_per_task", args.epochs_per_task),
            ("batch_size", args.batch_size),
        )
        if v is not None
    }
    rows = []
    previous = out(".json")
    if args.only and previous.is_file():
        # keep the rows of the same stream measured by an earlier invocation (e.g. no control) when only some
        # variants are (re)run; each row says when it was measured
        old = read_json(previous)
        if old.get("stream") == stream:
            rows = [r for r in old["rows"] if r["variant"] not in {n for n, _ in variants}]
    warm_up(args.runs_dir, **stream)
    for name, overrides in variants:
        if name == "tuned choice":
            overrides = dict(OFF, **_tuning_results()["tuned_choice"]["settings"])
        if name == "open-world choice":
            choice = _tuning_results().get("open_world_choice")
            if choice is None:
                print("open-world choice: skipped, the tuning results have none (run --stage tune --oe-grid)")
                continue
            overrides = dict(OFF, **choice["settings"], open_world_method=choice["score"])
        if overrides is None:
            weight = _ewc_weight(args)
            if weight is None:
                print(
                    "EWC: skipped, no weight of the tuning grid qualified (see collective_memory_tuning.md)", flush=True
                )
                continue
            overrides = dict(OFF, ewc_weight=weight)
        rows.append(run_variant(name, overrides, args.runs_dir, **stream))
        order = [n for n, _ in variants]
        rows.sort(key=lambda r: order.index(r["variant"]) if r["variant"] in order else -1)
        _write_compare(rows, default, stream, args)


def _tuning_results() -> dict[str, Any]:
    tuning = out("_tuning.json")
    if not tuning.is_file():
        raise SystemExit(
            f"No tuning results in {tuning}: run --stage tune first (or pass --ewc-weight and leave "
            "'tuned choice' out with --only)."
        )
    return read_json(tuning)


def _ewc_weight(args: argparse.Namespace) -> float | None:
    if args.ewc_weight is not None:
        return args.ewc_weight
    weight = _tuning_results().get("best_ewc_weight")
    return None if weight is None else float(weight)


def _write_compare(rows: list[dict[str, Any]], default: dict[str, Any], stream: dict[str, Any], args) -> None:
    result = {
        "stage": "compare",
        "preset_default": default,
        "stream": stream,
        "rows": rows,
        "machine": _machine(),
        "note": args.note,
    }
    write_json_atomic(out(".json"), result)
    finished = [r for r in rows if not r.get("diverged")]
    if finished:  # a diverged run has no accuracy at the end of the stream
        plot_task_accuracy(
            {r["variant"]: {"after": r["accuracy_after"], "end": r["accuracy_end"]} for r in finished}, out(".png")
        )
        plot_open_world_aurocs({r["variant"]: r["open_world_auroc"] for r in finished}, out("_auroc.png"))
    tasks = (
        len(finished[0]["accuracy_end"])
        if finished
        else stream.get("num_tasks", PRESET_TRAINING_DEFAULTS["small"]["num_tasks"])
    )
    changed = ", ".join(f"{k}={v}" for k, v in stream.items()) or "preset defaults"
    md = [
        "# Collective memory: forgetting and open-world recognition",
        "",
        f"Small preset, embedded data, {tasks} five-way tasks from the base classes "
        f"({changed}), one run per variant, one after another in one process. Machine: {_machine()}. {args.note}",
        "",
        "Forgetting: accuracy of a task's head right after learning it minus at the end of the stream, averaged over "
        "tasks. AUROC: mean over tasks 1.. of the open-world AUROC (the new task's test images, not yet learnt, vs "
        "held-out test images of the classes learnt so far), per score.",
        "",
    ]
    md += _table(rows, "no control") + [""]
    for r in rows:
        if r.get("diverged") and r.get("accuracy_after"):
            md.append(
                f"{r['variant']} diverged: accuracy right after learning tasks 0-{r['finished_tasks'] - 1}: "
                + ", ".join(f"{a:.2f}" for a in r["accuracy_after"])
                + "; mean EWC penalty of each task's last epoch: "
                + ", ".join(f"{p:.3g}" for p in r["last_epoch_ewc_penalty"])
                + "."
            )
            md.append("")
    if finished:
        md += [
            f"Accuracy per task at the end of the stream: `{out('.png').name}`; mean AUROC per score and variant: "
            f"`{out('_auroc.png').name}`.",
            "",
        ]
    write_text_atomic(out(".md"), "\n".join(md))
    print("\n".join(md), flush=True)


def fewshot(args: argparse.Namespace) -> None:
    """Paired few-shot check: the learngene of the "no control" run (the old default; ``--old-run``)
    against the learngene of the "preset default" run (``--new-run``), on the same novel-class
    episodes."""
    from dataclasses import replace

    from learngene_hf.data import sample_episodes
    from learngene_hf.fewshot.config import FewShotConfig
    from learngene_hf.fewshot.loading import load_fewshot_data
    from learngene_hf.fewshot.methods import baseline_methods
    from learngene_hf.fewshot.runner import Method, run_episodes
    from learngene_hf.models.individual import IndividualModel
    from learngene_hf.selection.criterion import first_block, paper_block
    from learngene_hf.selection.inheritor import Inheritor
    from learngene_hf.stats import mean_ci, paired_difference

    tuned = args.runs_dir / "tuned choice"
    new = args.new_run or (tuned if tuned.is_dir() else args.runs_dir / "preset default")
    runs = {"old": args.old_run or args.runs_dir / "no control", "new": new}
    methods, learngenes, names = [], {}, []
    for key, run_dir in runs.items():
        inheritor = Inheritor.from_run(run_dir, load_probe_data=False)
        n = inheritor.model.config.num_layers
        # the first block (what the validated selection picked in the pipeline) and the paper's block
        blocks = {"first": ("first 3", first_block(n, 3)), "last": ("last 3", paper_block(n, 3))}
        for block, layers in (blocks[b] for b in args.blocks):
            lg = learngenes[key, block] = inheritor.extract(layers)
            name = f"learngene {block}"
            methods.append(
                Method(
                    f"{name} ({key})",
                    lambda k, lg=lg: IndividualModel.from_learngene(lg, k),
                    description=f"descendant inheriting {lg.config.layer_names} of {run_dir}",
                )
            )
            for m in baseline_methods(
                lg, sources=("learngene",), classifiers=("logreg",), weight_selection_method=False
            ):
                methods.append(replace(m, name=f"logreg {name} ({key})"))
            names += [name, f"logreg {name}"] if key == "old" else []
    novel = list(split_classes(100, seed=0).novel)  # the default split's novel classes (the tuning runs have none)
    first = next(iter(learngenes.values()))
    data, novel, _ = load_fewshot_data(first, novel_classes=novel, open_world_classes=[])
    episodes = sample_episodes(data, novel, args.fewshot_episodes, 5, args.shots, 15, seed=0)
    cfg = FewShotConfig.from_recipe(args.recipe)
    start = time.perf_counter()
    rows = run_episodes(methods, episodes, cfg, progress=False, seed=0)
    seconds = time.perf_counter() - start
    acc = {m.name: [r["accuracy"][m.name] for r in rows] for m in methods}
    summary = {name: dict(zip(("mean", "ci95"), mean_ci(values))) for name, values in acc.items()}
    pairs = {}
    for name in names:
        diff = paired_difference(acc[f"{name} (new)"], acc[f"{name} (old)"])
        pairs[name] = {"mean": diff[0], "ci95": diff[1]}
    result = {
        "stage": "fewshot",
        "runs": {k: str(v) for k, v in runs.items()},
        "episodes": len(episodes),
        "ways": 5,
        "shots": args.shots,
        "queries": 15,
        "recipe": args.recipe,
        "methods": summary,
        "new_minus_old": pairs,
        "accuracies": acc,
        "seconds": seconds,
        "machine": _machine(),
        "note": args.note,
    }
    write_json_atomic(out("_fewshot.json"), result)
    md = [
        "# Collective memory: does the learngene suffer?",
        "",
        f"{len(episodes)} novel-class 5-way {args.shots}-shot episodes (15 queries per class, seed 0), the same for "
        "every method. Learngenes: "
        + " and ".join(
            {
                "first": "the first block (conv0-2, the block the pipeline's validated selection picked)",
                "last": "the paper's block (the last 3 layers)",
            }[b]
            for b in args.blocks
        )
        + " of the collective run without forgetting control "
        f"(old: `{runs['old']}`) and of the run with the new default (new: `{runs['new']}`). "
        f"`learngene ...`: a descendant fine-tuned with the {args.recipe} recipe; `logreg learngene ...`: logistic "
        "regression "
        f"on its frozen features up to the learngene's end. Machine: {_machine()}. {args.note}",
        "",
        "| method | mean accuracy | 95% CI |",
        "|---|---|---|",
    ]
    md += [f"| {name} | {v['mean']:.3f} | +/- {v['ci95']:.3f} |" for name, v in summary.items()]
    md += ["", "| paired difference new - old | mean | 95% CI |", "|---|---|---|"]
    md += [f"| {name} | {v['mean']:+.3f} | +/- {v['ci95']:.3f} |" for name, v in pairs.items()]
    write_text_atomic(out("_fewshot.md"), "\n".join(md) + "\n")
    print("\n".join(md), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["tune", "compare", "fewshot"], required=True)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/collective_memory"))
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only the variants whose name contains one of these"
    )
    parser.add_argument("--note", default="", help="free text for the results (e.g. machine load)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (small: 64)")
    # tune
    parser.add_argument("--tune-tasks", type=int, default=3)
    parser.add_argument("--tune-epochs", type=int, default=4)
    parser.add_argument("--tune-images", type=int, default=100)
    parser.add_argument("--ewc-grid", type=float, nargs="*", default=[100.0, 1000.0, 10000.0])
    parser.add_argument("--bn-grid", type=int, nargs="*", default=[])
    parser.add_argument("--replay-grid", type=int, nargs="*", default=[])
    parser.add_argument("--combine", action="store_true", help="also tune every BN point with every replay size")
    parser.add_argument("--oe-grid", type=float, nargs="*", default=[], help="outlier-exposure weights (with replay)")
    parser.add_argument(
        "--oe-heads",
        nargs="*",
        default=list(OUTLIER_EXPOSURE_HEADS),
        choices=OUTLIER_EXPOSURE_HEADS,
        help="outlier_exposure_heads to tune",
    )
    # compare
    parser.add_argument("--num-tasks", type=int, default=None)
    parser.add_argument("--images-per-class", type=int, default=None, help="training images per class (small: 300)")
    parser.add_argument("--epochs-per-task", type=int, default=None)
    parser.add_argument("--ewc-weight", type=float, default=None, help="default: the tuned weight of --stage tune")
    parser.add_argument("--bn-freeze-after", type=int, default=3)
    parser.add_argument("--replay-per-class", type=int, default=20)
    parser.add_argument("--outlier-exposure", type=float, default=0.5, help="weight of the outlier-exposure variant")
    parser.add_argument("--outlier-exposure-heads", default="all", choices=OUTLIER_EXPOSURE_HEADS)
    # fewshot
    parser.add_argument("--fewshot-episodes", type=int, default=40)
    parser.add_argument("--old-run", type=Path, default=None, help="default: RUNS_DIR/'no control'")
    parser.add_argument(
        "--new-run",
        type=Path,
        default=None,
        help="default: RUNS_DIR/'tuned choice' if it exists, else RUNS_DIR/'preset default'",
    )
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument(
        "--blocks",
        nargs="+",
        choices=["first", "last"],
        default=["first", "last"],
        help="learngenes to compare: the first 3 layers (what the pipeline selects) and/or the paper's last 3",
    )
    parser.add_argument(
        "--recipe", default="default", choices=["default", "paper"], help="few-shot recipe of the descendants"
    )
    parser.add_argument("--tag", default="", help="results file suffix, e.g. _open_world (keeps the others)")
    args = parser.parse_args()
    global TAG
    TAG = args.tag
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    {"tune": tune, "compare": compare, "fewshot": fewshot}[args.stage](args)


if __name__ == "__main__":
    main()
