"""ViT descendants of several depths from one linear-expansion learngene (TLEG) vs scratch and
weight selection, on the embedded data's novel classes.

1. Two collective ViTs learn the same task stream of base classes with the collective trainer and
   the same budget: one with the linear-expansion constraint (its learngene: base + increment per
   block parameter), one unconstrained (the source of the weight-selection baseline, Xu et al.
   ICLR 2024: first-N blocks, evenly spaced elements).
2. Moderate budget: for every depth, a descendant is trained on all novel classes
   (``--train-per-class`` images each) for ``--epochs`` epochs, from the learngene ("tleg"), by
   weight selection ("weight_selection") and from scratch, with the same seeds, batches and
   augmentation; test accuracy after every epoch. Reported: final accuracy (mean over seeds, paired
   difference to scratch with a 95% CI) and the first epoch at which each method reaches scratch's
   final accuracy.
3. Few-shot: 5-way 5-shot episodes of the novel classes with the library's default few-shot
   recipe (``FewShotConfig()``: steps, LP-FT, warm-up + cosine, label smoothing), through
   ``learngene_hf.fewshot.compare.compare_vit_depths``: per depth the three fine-tuned methods above
   and logistic regression on the frozen features of a random ViT of that depth (the strongest
   method that inherits nothing in the VGG benchmarks). Every learning rate and L2 strength is
   picked on open-world episodes (never the novel classes).

CPU-affordable by design (a small ViT: width 64, patch 8 on 32x32 images, 6 blocks; few tasks,
epochs and seeds): the numbers show the method working end to end at toy scale, not TLEG's
ImageNet setting. Writes benchmarks/results/vit_descendants.{json,md,png} (or ``--output-dir``).

Runs on ``--device`` (default: CUDA when available): the collectives through accelerate (bf16
mixed precision on a GPU that has it), every descendant stacked (``learngene_hf.fewshot.stacked``:
``--stack-size`` ViTs of one depth train as one vmapped network, so a GPU step costs the launches
of one model), same batches, augmentation and optimizer updates as one at a time.

    python benchmarks/vit_descendants.py                       # the README's numbers (CPU)
    python benchmarks/vit_descendants.py --quick --output-dir /tmp/vit   # a smoke run
    # on a GPU:
    python benchmarks/vit_descendants.py --seeds 32 --episodes 100 --stack-size 160 --output-dir /tmp/vit_gpu
    # the "half the epochs" question: per-method lrs picked on open-world classes, warm-up + cosine, half-budget runs
    python benchmarks/vit_descendants.py --seeds 32 --episodes 100 --stack-size 160 --schedule cosine \
        --moderate-lr-grid 3e-4,1e-3,3e-3 --half-budget --output-dir /tmp/vit_gpu_half
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch

from learngene_hf import Learngene, ViTCollectiveConfig, ViTCollectiveModel, ViTIndividualConfig, ViTIndividualModel
from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.fewshot.compare import compare_vit_depths
from learngene_hf.fewshot.config import DEFAULT_VIT_LR_GRID, FewShotConfig
from learngene_hf.fewshot.stacked import augment_stacked
from learngene_hf.fewshot.stacks import StackedViTs
from learngene_hf.fewshot.tuning import tuning_episodes
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.stats import mean_ci, paired_difference
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.trainer import train_collective

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("tleg", "weight_selection", "scratch")
FEW_SHOT_METHODS = ("tleg", "weight_selection", "scratch", "logreg_random")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--depths", default="2,4,6", help="descendant depths (weight selection needs <= the collective's depth)"
    )
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--num-heads", type=int, default=2)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--collective-depth", type=int, default=6)
    p.add_argument("--num-tasks", type=int, default=10)
    p.add_argument("--collective-epochs", type=int, default=4)
    p.add_argument("--collective-per-class", type=int, default=150)
    p.add_argument("--collective-lr", type=float, default=1e-3, help="AdamW learning rate of the collective ViTs")
    p.add_argument(
        "--train-per-class", type=int, default=50, help="novel-class training images per class (moderate budget)"
    )
    p.add_argument("--test-per-class", type=int, default=40)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="AdamW learning rate of the moderate-budget runs (all methods; see --moderate-lr-grid)",
    )
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="moderate-budget lr schedule: constant, or linear warm-up then cosine decay to 0 over the run's own "
        "epochs",
    )
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="warm-up of --schedule cosine, in epochs")
    p.add_argument(
        "--moderate-lr-grid",
        default="",
        help="pick each method's moderate-budget lr per depth from these values on a task of the open-world "
        "classes (never the novel ones); empty: --lr for every method",
    )
    p.add_argument("--tune-seeds", type=int, default=4, help="seeds per grid value when picking moderate-budget lrs")
    p.add_argument(
        "--half-budget",
        action="store_true",
        help="also train the inheriting methods for half the epochs (their own schedule, their own picked lr) "
        "and compare with scratch's full-budget final accuracy (TLEG's 'half the training' claim)",
    )
    p.add_argument("--seeds", type=int, default=8, help="moderate-budget runs per method and depth (paired by seed)")
    p.add_argument("--episodes", type=int, default=40, help="few-shot episodes of the novel classes (paired)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument(
        "--few-shot-widths",
        default="",
        help="embedding widths of the few-shot descendants, e.g. 64,32 (empty: the collective's width only); "
        "a narrower descendant takes evenly spaced elements of the learngene or the unconstrained ViT",
    )
    p.add_argument(
        "--tune-episodes", type=int, default=3, help="open-world episodes per tuning grid point (0: no tuning)"
    )
    p.add_argument(
        "--lr-grid",
        default=",".join(f"{v:g}" for v in DEFAULT_VIT_LR_GRID),
        help="few-shot learning rates tried on open-world episodes (widened once at an edge)",
    )
    p.add_argument("--skip-moderate", action="store_true", help="few-shot only")
    p.add_argument(
        "--reuse-collectives",
        action="store_true",
        help="resume the collective runs in --work-dir when they exist (same settings), instead of retraining",
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where everything trains (default: cuda when available, else cpu)",
    )
    p.add_argument(
        "--stack-size",
        type=int,
        default=16,
        help="descendants trained at once as one stacked network (moderate budget and few-shot); "
        "large values pay off on a GPU, where one small ViT cannot fill the device",
    )
    p.add_argument("--quick", action="store_true", help="tiny everything, for a smoke test")
    p.add_argument("--output-dir", default=str(RESULTS))
    p.add_argument("--work-dir", default="runs/vit_descendants", help="where the two collective runs are written")
    args = p.parse_args(argv)
    if args.quick:
        args.depths, args.num_tasks, args.collective_epochs, args.collective_per_class = "2,3", 2, 1, 20
        args.train_per_class, args.test_per_class, args.epochs, args.seeds, args.episodes = 5, 5, 2, 2, 2
        args.collective_depth, args.tune_episodes, args.lr_grid = 3, 1, "0.01,0.05"
    if args.stack_size <= 0 or args.tune_seeds <= 0:
        p.error(f"--stack-size and --tune-seeds must be positive, got {args.stack_size}, {args.tune_seeds}")
    if args.half_budget and args.epochs < 2:
        p.error("--half-budget needs --epochs >= 2")
    args.moderate_lr_grid = [float(v) for v in str(args.moderate_lr_grid).split(",") if v.strip()]
    args.depths = [int(d) for d in str(args.depths).split(",")]
    args.lr_grid = [float(v) for v in str(args.lr_grid).split(",")]
    args.few_shot_widths = [int(w) for w in str(args.few_shot_widths).split(",") if w.strip()]
    bad = [w for w in args.few_shot_widths if w > args.embed_dim or w % args.num_heads]
    if bad:
        p.error(
            f"--few-shot-widths {bad}: each must be <= --embed-dim {args.embed_dim} and divisible by "
            f"--num-heads {args.num_heads}"
        )
    return args


def machine(device: str) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count() or 0,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "device": device,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def train_collectives(args, data, out: Path) -> tuple[Any, Any, Any]:
    """The linear-expansion and the unconstrained collective ViT, same stream and budget."""
    accelerator = None  # accelerate's default: the GPU when there is one, bf16 where supported
    if torch.device(args.device).type == "cpu":
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True, mixed_precision="no")
    runs = {}
    for expansion in ("linear", "none"):
        config = CollectiveTrainingConfig.for_preset(
            "vit-small",
            num_tasks=args.num_tasks,
            epochs_per_task=args.collective_epochs,
            lr=args.collective_lr,
            train_per_class=args.collective_per_class,
            test_per_class=20,
        )
        torch.manual_seed(0)
        model = ViTCollectiveModel(
            ViTCollectiveConfig(
                preset="vit-small",
                embed_dim=args.embed_dim,
                num_heads=args.num_heads,
                patch_size=args.patch_size,
                depth=args.collective_depth,
                expansion=expansion,
            )
        )
        started = time.perf_counter()
        runs[expansion] = train_collective(
            config,
            out / f"collective_{expansion}",
            model=model,
            data=data,
            progress=False,
            resume=args.reuse_collectives,
            accelerator=accelerator,
        )
        print(
            f"collective ({expansion}): mean accuracy after each task "
            f"{runs[expansion].report['mean_accuracy_after']:.3f}, "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    learngene = Learngene.from_vit_collective(runs["linear"].model)
    return learngene, runs["none"].model, runs


def builders(learngene, plain, depth: int) -> dict[str, Callable[[int], ViTIndividualModel]]:
    return {
        "tleg": lambda n: ViTIndividualModel.from_learngene(learngene, n, num_blocks=depth),
        "weight_selection": lambda n: ViTIndividualModel.from_weight_selection(plain, n, num_blocks=depth),
        "scratch": lambda n: ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, n, num_blocks=depth)),
    }


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total`` under
    ``--schedule cosine``: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train_with_curves(
    jobs: list[tuple[Callable[[int], ViTIndividualModel], int]],
    images,
    labels,
    test_images,
    test_labels,
    args,
    lr: float | None = None,
    epochs: int | None = None,
) -> list[list[float]]:
    """Test accuracy after every epoch of AdamW training (peak lr ``lr``, default ``--lr``, for
    ``epochs`` epochs, default ``--epochs``, under ``--schedule``), one curve per ``(builder, seed)`` job.

    A job's seed fixes the initialization of its fresh parts, its batch order and its augmentation
    (the same for every method with that seed). Jobs train ``--stack-size`` at a time as one
    stacked network (every job of one call must build ViTs of one architecture): AdamW is
    elementwise, so one AdamW over the stacked tensors updates every model as its own would, and
    each model draws its batches and crops from its own generator as it would alone.
    """
    from learngene_hf.fewshot.train import normalize

    device = torch.device(args.device)
    lr = args.lr if lr is None else lr
    epochs = args.epochs if epochs is None else epochs
    per_epoch = math.ceil(len(images) / 64)
    total, warmup = epochs * per_epoch, round(args.warmup_epochs * per_epoch)
    num_labels = int(labels.max()) + 1
    curves: list[list[float]] = []
    for first in range(0, len(jobs), args.stack_size):
        chunk = jobs[first : first + args.stack_size]
        models = []
        for build, seed in chunk:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                models.append(build(num_labels).to(device))
        config = models[0].config
        x = normalize(images, device, config.image_mean, config.image_std)
        tx = normalize(test_images, device, config.image_mean, config.image_std)
        y, ty = labels.to(device), test_labels.to(device)
        stack = StackedViTs(models)
        optimizer = torch.optim.AdamW(stack.parameters(), lr=lr, weight_decay=0.05)
        schedule = None
        if args.schedule == "cosine":
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
        generators = [torch.Generator().manual_seed(seed) for _, seed in chunk]
        chunk_curves: list[list[float]] = [[] for _ in chunk]
        for _ in range(epochs):
            orders = torch.stack([torch.randperm(len(x), generator=g) for g in generators])
            for start in range(0, len(x), 64):
                idx = orders[:, start : start + 64].to(device)
                logits = stack.logits(augment_stacked(x[idx], generators), train=True)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none")
                loss = loss.view(len(chunk), -1).mean(1).sum()  # each model's own mean loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
            with torch.no_grad():
                correct = torch.zeros(len(chunk), device=device)
                for start in range(0, len(tx), 256):
                    pred = stack.logits(tx[start : start + 256], train=False, shared_input=True).argmax(-1)
                    correct += (pred == ty[start : start + 256]).sum(1)
            for curve, c in zip(chunk_curves, correct.tolist()):
                curve.append(c / len(tx))
        curves += chunk_curves
    return curves


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """First epoch (1-based) whose accuracy is >= ``target``; None if never."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= target - 1e-12), None)


def novel_subset(train, test, novel: list[int], per_class: int, test_per_class: int):
    def pick(data, count):
        xs, ys = [], []
        for local, c in enumerate(novel):
            idx = (data.labels == c).nonzero().flatten()[:count]
            xs.append(data.images[idx])
            ys.append(torch.full((len(idx),), local, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys)

    return (*pick(train, per_class), *pick(test, test_per_class))


def curves_by_method(build, methods, lrs: dict[str, float], seeds: list[int], data, args, epochs: int | None = None):
    """``{method: [curve per seed]}``; the methods that share an lr train in one stacked call."""
    out: dict[str, list[list[float]]] = {}
    for lr in sorted({lrs[m] for m in methods}):
        group = [m for m in methods if lrs[m] == lr]
        trained = train_with_curves(
            [(build[m], seed) for m in group for seed in seeds], *data, args, lr=lr, epochs=epochs
        )
        for i, m in enumerate(group):
            out[m] = trained[i * len(seeds) : (i + 1) * len(seeds)]
    return out


def pick_moderate_lrs(
    args, learngene, plain, train, test, open_world, depth: int, methods, epochs: int
) -> dict[str, Any]:
    """Each method's lr from ``--moderate-lr-grid``: the best mean final test accuracy over
    ``--tune-seeds`` seeds on the same kind of task made of the open-world classes (never the
    novel ones); ties go to the smaller lr."""
    data = novel_subset(train, test, open_world, args.train_per_class, args.test_per_class)
    build = builders(learngene, plain, depth)
    seeds = [5000 + s for s in range(args.tune_seeds)]
    means: dict[str, dict[float, float]] = {m: {} for m in methods}
    for lr in args.moderate_lr_grid:
        curves = curves_by_method(build, methods, {m: lr for m in methods}, seeds, data, args, epochs=epochs)
        for m in methods:
            means[m][lr] = sum(c[-1] for c in curves[m]) / len(seeds)
    chosen = {m: max(sorted(means[m]), key=lambda v: (means[m][v], -v)) for m in methods}
    grid = sorted(args.moderate_lr_grid)
    return {
        "chosen": chosen,
        "means": {m: {f"{k:g}": v for k, v in means[m].items()} for m in methods},
        "edge": [m for m in methods if len(grid) > 1 and chosen[m] in (grid[0], grid[-1])],
        "classes": len(open_world),
        "epochs": epochs,
        "seeds": args.tune_seeds,
    }


def moderate_budget(args, learngene, plain, train, test, novel, open_world) -> dict[str, Any]:
    data = novel_subset(train, test, novel, args.train_per_class, args.test_per_class)
    seeds = [1000 + seed for seed in range(args.seeds)]
    inheriting = [m for m in METHODS if m != "scratch"]
    half_epochs = args.epochs // 2
    out: dict[str, Any] = {}
    for depth in args.depths:
        build = builders(learngene, plain, depth)
        started = time.perf_counter()
        entry: dict[str, Any] = {}
        lrs = {m: args.lr for m in METHODS}
        half_lrs = {m: args.lr for m in inheriting}
        if args.moderate_lr_grid:
            entry["lr_tuning"] = pick_moderate_lrs(
                args, learngene, plain, train, test, open_world, depth, METHODS, args.epochs
            )
            lrs = entry["lr_tuning"]["chosen"]
            if args.half_budget:
                entry["half_lr_tuning"] = pick_moderate_lrs(
                    args, learngene, plain, train, test, open_world, depth, inheriting, half_epochs
                )
                half_lrs = entry["half_lr_tuning"]["chosen"]
        curves = curves_by_method(build, METHODS, lrs, seeds, data, args)
        finals = {m: [c[-1] for c in curves[m]] for m in METHODS}
        entry["curves"] = curves
        for m in METHODS:
            mean, half = mean_ci(finals[m])
            reach = [epochs_to_reach(c, s[-1]) for c, s in zip(curves[m], curves["scratch"])]
            entry[m] = {
                "final": finals[m],
                "mean": mean,
                "ci95": _finite(half),
                "epochs_to_scratch_final": reach,
                "lr": lrs[m],
            }
            if m != "scratch":
                d, h = paired_difference(finals[m], finals["scratch"])
                entry[m]["diff_vs_scratch"] = {"mean": d, "ci95": _finite(h)}
        if args.half_budget:
            half_curves = curves_by_method(build, inheriting, half_lrs, seeds, data, args, epochs=half_epochs)
            for m in inheriting:
                short = [c[-1] for c in half_curves[m]]
                mean, half = mean_ci(short)
                d, h = paired_difference(short, finals["scratch"])
                entry[m]["half_budget"] = {
                    "epochs": half_epochs,
                    "lr": half_lrs[m],
                    "final": short,
                    "curves": half_curves[m],
                    "mean": mean,
                    "ci95": _finite(half),
                    "diff_vs_scratch_full": {"mean": d, "ci95": _finite(h)},
                    "seeds_at_or_above_scratch_full": sum(a >= b - 1e-12 for a, b in zip(short, finals["scratch"])),
                }
        entry["seconds"] = time.perf_counter() - started
        out[str(depth)] = entry
        print(
            f"moderate budget, depth {depth}: "
            + ", ".join(f"{m} {100 * entry[m]['mean']:.1f}" for m in METHODS)
            + f" ({entry['seconds']:.0f} s)",
            flush=True,
        )
    return out


def few_shot(args, learngene, plain, train, novel, open_world) -> dict[str, Any]:
    """5-way episodes of the novel classes, every method per depth, with the default recipe;
    learning rates (fine-tuned methods) and L2 strengths (logistic regression) picked on
    open-world episodes."""
    episodes = sample_episodes(train, novel, args.episodes, ways=5, shots=args.shots, queries=15, seed=0)
    tune = (
        tuning_episodes(train, open_world, args.tune_episodes, 5, args.shots, 15, seed=0)
        if args.tune_episodes
        else None
    )
    cfg = FewShotConfig(device=args.device, stack_size=args.stack_size)
    started = time.perf_counter()
    results = compare_vit_depths(
        learngene,
        plain,
        episodes,
        cfg,
        args.depths,
        widths=[None if w == args.embed_dim else w for w in args.few_shot_widths] or (None,),
        tune_lr_episodes=tune,
        lr_grid=args.lr_grid,
        progress=False,
        seed=0,
    )
    out: dict[str, Any] = {
        "recipe": cfg.to_dict(),
        "seconds": time.perf_counter() - started,
        "tuned_on": f"{len(tune or [])} open-world episodes" if tune else None,
        "rows": results["sizes"],
        "methods": results["methods"],
        "episodes": results["episodes"],
    }
    for size in dict.fromkeys(r["size"] for r in results["sizes"]):
        got = {r["method"]: r for r in results["sizes"] if r["size"] == size}
        print(
            f"few-shot, depth {size.replace('w', ', width ')}: "
            + ", ".join(f"{m} {100 * got[m]['mean']:.1f}" for m in FEW_SHOT_METHODS if m in got),
            flush=True,
        )
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pm(entry: dict, key: str = "mean", half: str = "ci95", sign: bool = False) -> str:
    mean, ci = entry[key], entry[half]
    text = f"{'+' if sign and mean >= 0 else ''}{100 * mean:.1f}"
    return text + (f" +/- {100 * ci:.1f}" if ci is not None else "")


def _reach_text(reach: list[int | None]) -> str:
    """Per-seed epochs to scratch's final accuracy ('-' = never), or their median beyond 10 seeds."""
    if len(reach) <= 10:
        return ", ".join("-" if r is None else str(r) for r in reach)
    never = sum(r is None for r in reach)
    ordered = sorted(float("inf") if r is None else r for r in reach)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return f"median {'-' if median == float('inf') else f'{median:g}'}" + (f" ({never} never)" if never else "")


def _reach_summary(entry: dict[str, Any], epochs: int) -> str:
    """How often (and how far from) the method reaches scratch's final accuracy in half the epochs."""
    reach = entry["epochs_to_scratch_final"]
    half = epochs / 2
    met = sum(r is not None and r <= half for r in reach)
    return f"{met}/{len(reach)} within {half:g}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    sizes = results["sizes"]
    m = results["machine"]
    cpu = "CPU, %d cores shared with other jobs (load average %.1f at start), torch threads %d" % (
        m["cpu_count"],
        m["load_average_at_start"][0],
        m["torch_threads"],
    )
    lines = [
        f"ViT descendants on the embedded data's {s['novel_classes']} novel classes, machine: {m.get('gpu') or cpu}.",
        "",
        f"Collective ViTs (width {s['embed_dim']}, {s['num_heads']} heads, patch {s['patch_size']} on 32x32, "
        f"{s['collective_depth']} blocks): "
        f"{s['num_tasks']} five-way tasks of base classes, {s['collective_epochs']} epochs each, "
        f"{s['collective_per_class']} images per class, "
        f"AdamW lr {s['collective_lr']}. Mean accuracy after each task: linear expansion "
        f"{100 * results['collective']['linear']:.1f}%, "
        f"unconstrained {100 * results['collective']['none']:.1f}%.",
        "",
        f"Learngene: {sizes['learngene_parameters']:,} parameters, of which the base/increment pair holds "
        f"{sizes['pair_parameters']:,} "
        f"= {100 * sizes['pair_fraction_of_unconstrained_blocks']:.1f}% (2/{s['collective_depth']}) of the block "
        "parameters of the unconstrained "
        f"{s['collective_depth']}-block ViT ({sizes['unconstrained_block_parameters']:,}).",
    ]
    if "moderate_budget" in results:
        grid = s.get("moderate_lr_grid") or []
        schedule = s.get("schedule", "constant")
        lr_text = (
            f"peak lr picked per method and depth from {', '.join(f'{v:g}' for v in grid)} on a task of the "
            f"open-world classes ({s.get('tune_seeds')} seeds each, never the novel classes)"
            if grid
            else f"lr {s['lr']}"
        )
        if schedule == "cosine":
            lr_text += f", {s.get('warmup_epochs'):g} warm-up epoch(s) then cosine decay to 0"
        lines += [
            "",
            f"**Moderate budget**: all {s['novel_classes']} novel classes, {s['train_per_class']} training and "
            f"{s['test_per_class']} test images each, "
            f"{s['epochs']} epochs of AdamW ({lr_text}, weight decay 0.05, batch 64, crop + flip), {s['seeds']} seeds; "
            "test accuracy in % "
            "(mean +/- 95% CI over seeds; differences paired by seed). 'epochs to scratch final': first epoch at which "
            "the method reaches "
            "scratch's final accuracy of the same seed (- = never), per seed (median over seeds when there are more "
            "than 10); "
            "'within half': seeds that reach it in at most half the epochs.",
            "",
            "| depth | method | lr | accuracy | vs scratch | epochs to scratch final | within half |",
            "| ---: | --- | ---: | --- | --- | --- | --- |",
        ]
        for depth, entry in results["moderate_budget"].items():
            for method in METHODS:
                e = entry[method]
                vs = _pm(e["diff_vs_scratch"], sign=True) if "diff_vs_scratch" in e else "-"
                within = _reach_summary(e, s["epochs"]) if method != "scratch" else "-"
                lr = e.get("lr", s["lr"])
                edge = " (edge)" if method in entry.get("lr_tuning", {}).get("edge", []) else ""
                lines.append(
                    f"| {depth} | {method} | {lr:g}{edge} | {_pm(e)} | {vs} | "
                    f"{_reach_text(e['epochs_to_scratch_final'])} | {within} |"
                )
        halves = [
            (d, m, entry[m]["half_budget"])
            for d, entry in results["moderate_budget"].items()
            for m in METHODS
            if "half_budget" in entry[m]
        ]
        if halves:
            lines += [
                "",
                f"**Half the budget**: the inheriting methods trained for {halves[0][2]['epochs']} epochs (their own "
                "schedule"
                f"{' and their own picked lr' if grid else ''}) against scratch's {s['epochs']}-epoch final accuracy, "
                "paired by seed.",
                "",
                "| depth | method | lr | accuracy after half the epochs | vs scratch after all epochs | seeds at or "
                "above scratch |",
                "| ---: | --- | ---: | --- | --- | --- |",
            ]
            for depth, method, h in halves:
                lines.append(
                    f"| {depth} | {method} | {h['lr']:g} | {_pm(h)} | {_pm(h['diff_vs_scratch_full'], sign=True)} | "
                    f"{h['seeds_at_or_above_scratch_full']}/{len(h['final'])} |"
                )
    if "few_shot" in results:
        fs = results["few_shot"]
        r = fs["recipe"]
        lines += [
            "",
            f"**Few-shot**: 5-way {s['shots']}-shot, 15 queries per class, {s['episodes']} episodes of the novel "
            "classes, the library's "
            f"default few-shot recipe ({r['steps']} SGD steps of batch {r['batch_size']}, LP-FT with {r['lp_steps']} "
            "head-only steps, "
            f"{r['warmup_steps']} warm-up steps then cosine decay, label smoothing {r['label_smoothing']}, crop + "
            "flip); "
            f"learning rates and the L2 strength of logistic regression picked per method on "
            f"{fs['tuned_on'] or 'nothing (no tuning)'} from {', '.join(f'{v:g}' for v in s['lr_grid'])} (widened once "
            "at an edge). "
            "Accuracy in % (mean +/- 95% CI over episodes); differences paired by episode, against scratch of the same "
            "depth and "
            "against the strongest method of that depth that inherits nothing.",
            "",
            "| depth | method | lr / L2 | inherited bytes | accuracy | vs scratch | vs strongest that inherits nothing "
            "|",
            "| ---: | --- | --- | ---: | --- | --- | --- |",
        ]
        for row in fs["rows"]:
            vs = _pm(row["diff_vs_scratch"], sign=True) if row["diff_vs_scratch"] else "-"
            st = row["diff_vs_strongest"]
            vs_st = f"{_pm(st, sign=True)} ({st['baseline']})" if st else "(strongest)"
            method = fs["methods"][row["name"]]
            setting = (
                f"lr {row['lr']:g}"
                if row["lr"] is not None
                else ", ".join(f"{k} {v:g}" for k, v in (row["settings"] or {}).items())
            )
            if method.get("edge_of_grid"):
                setting += " (edge)"
            lines.append(
                f"| {row['size']} | {row['method']} | {setting} | {row['inherited_bytes']:,} | {_pm(row)} | {vs} | "
                f"{vs_st} |"
            )
    if "seconds" in results:
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in results.get("stage_seconds", {}).items())
        lines += [
            "",
            f"Total wall time {results['seconds'] / 60:.1f} min ({parts}); descendants trained on "
            f"`{s.get('device', 'cpu')}`, "
            f"up to {s.get('stack_size', 1)} at a time (stacked). Command: `{results['command']}`.",
            "",
        ]
    else:
        lines += ["", f"(partial results, written after a stage). Command: `{results['command']}`.", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = list(results["moderate_budget"])
    fig, axes = plt.subplots(1, len(depths), figsize=(4 * len(depths), 3.2), sharey=True, squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for m in METHODS:
            curves = torch.tensor(results["moderate_budget"][depth]["curves"][m]) * 100
            epochs = range(1, curves.shape[1] + 1)
            ax.plot(epochs, curves.mean(0).tolist(), marker="o", label=m)
        ax.set_title(f"{depth} blocks")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("novel-class test accuracy (%)")
    axes[0][-1].legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> dict[str, Any]:
    import sys

    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = machine(args.device)
    train, test = load_tensors(
        None,
        train_per_class=max(args.collective_per_class, args.train_per_class, 20),
        test_per_class=max(args.test_per_class, 20),
    )
    work = Path(args.work_dir)
    stage = time.perf_counter()
    learngene, plain, runs = train_collectives(args, (train, test), work)
    stages = {"collectives": time.perf_counter() - stage}
    novel = list(runs["linear"].split.novel)
    pair = sum(t.numel() for n, t in learngene.tensors.items() if n.startswith(("base.", "inc.")))
    unconstrained_blocks = sum(p.numel() for p in plain.vit.blocks.parameters())
    results: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("output_dir", "work_dir")}
        | {"novel_classes": len(novel)},
        "machine": info,
        "collective": {k: r.report["mean_accuracy_after"] for k, r in runs.items()},
        "sizes": {
            "learngene_parameters": learngene.num_parameters(),
            "pair_parameters": pair,
            "unconstrained_block_parameters": unconstrained_blocks,
            "pair_fraction_of_unconstrained_blocks": pair / unconstrained_blocks,
            "descendant_parameters": {
                str(d): sum(p.numel() for p in builders(learngene, plain, d)["scratch"](len(novel)).parameters())
                for d in args.depths
            },
        },
        "command": "python benchmarks/vit_descendants.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "stage_seconds": stages,
    }
    if not args.skip_moderate:
        stage = time.perf_counter()
        results["moderate_budget"] = moderate_budget(
            args, learngene, plain, train, test, novel, list(runs["linear"].split.open_world)
        )
        stages["moderate_budget"] = time.perf_counter() - stage
        write_json_atomic(out / "vit_descendants.json", results)  # partial: a later stage may not finish
        write_text_atomic(out / "vit_descendants.md", markdown(results))
    stage = time.perf_counter()
    results["few_shot"] = few_shot(args, learngene, plain, train, novel, list(runs["linear"].split.open_world))
    stages["few_shot"] = time.perf_counter() - stage
    results["seconds"] = time.perf_counter() - started
    write_json_atomic(out / "vit_descendants.json", results)
    write_text_atomic(out / "vit_descendants.md", markdown(results))
    if "moderate_budget" in results:
        plot(results, out / "vit_descendants.png")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
