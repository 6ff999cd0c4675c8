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
   recipe (``FewShotConfig()``), the same three methods per depth.

CPU-affordable by design (a small ViT: width 64, patch 8 on 32x32 images, 6 blocks; few tasks,
epochs and seeds): the numbers show the method working end to end at toy scale, not TLEG's
ImageNet setting. Writes benchmarks/results/vit_descendants.{json,md,png}.

    python benchmarks/vit_descendants.py                       # the README's numbers
    python benchmarks/vit_descendants.py --quick --output-dir /tmp/vit   # a smoke run
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
from learngene_hf.fewshot import FewShotConfig, Method, augment_batch, evaluate, run_episodes
from learngene_hf.io import write_json_atomic, write_text_atomic
from learngene_hf.stats import mean_ci, paired_difference
from learngene_hf.training import CollectiveTrainingConfig, train_collective

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("tleg", "weight_selection", "scratch")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="2,4,6", help="descendant depths (weight selection needs <= the collective's depth)")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--num-heads", type=int, default=2)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--collective-depth", type=int, default=6)
    p.add_argument("--num-tasks", type=int, default=10)
    p.add_argument("--collective-epochs", type=int, default=4)
    p.add_argument("--collective-per-class", type=int, default=150)
    p.add_argument("--collective-lr", type=float, default=1e-3, help="AdamW learning rate of the collective ViTs")
    p.add_argument("--train-per-class", type=int, default=50, help="novel-class training images per class (moderate budget)")
    p.add_argument("--test-per-class", type=int, default=40)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the moderate-budget runs (all methods)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny everything, for a smoke test")
    p.add_argument("--output-dir", default=str(RESULTS))
    p.add_argument("--work-dir", default="runs/vit_descendants", help="where the two collective runs are written")
    args = p.parse_args(argv)
    if args.quick:
        args.depths, args.num_tasks, args.collective_epochs, args.collective_per_class = "2,3", 2, 1, 20
        args.train_per_class, args.test_per_class, args.epochs, args.seeds, args.episodes = 5, 5, 2, 2, 2
        args.collective_depth = 3
    args.depths = [int(d) for d in str(args.depths).split(",")]
    return args


def machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count() or 0, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "load_average_at_start": list(os.getloadavg())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def train_collectives(args, data, out: Path) -> tuple[Any, Any, Any]:
    """The linear-expansion and the unconstrained collective ViT, same stream and budget."""
    runs = {}
    for expansion in ("linear", "none"):
        config = CollectiveTrainingConfig.for_preset(
            "vit-small", num_tasks=args.num_tasks, epochs_per_task=args.collective_epochs, lr=args.collective_lr,
            train_per_class=args.collective_per_class, test_per_class=20,
        )
        torch.manual_seed(0)
        model = ViTCollectiveModel(ViTCollectiveConfig(
            preset="vit-small", embed_dim=args.embed_dim, num_heads=args.num_heads, patch_size=args.patch_size,
            depth=args.collective_depth, expansion=expansion,
        ))
        started = time.perf_counter()
        runs[expansion] = train_collective(config, out / f"collective_{expansion}", model=model, data=data, progress=False, resume=False)
        print(f"collective ({expansion}): mean accuracy after each task {runs[expansion].report['mean_accuracy_after']:.3f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    learngene = Learngene.from_vit_collective(runs["linear"].model)
    return learngene, runs["none"].model, runs


def builders(learngene, plain, depth: int) -> dict[str, Callable[[int], ViTIndividualModel]]:
    return {
        "tleg": lambda n: ViTIndividualModel.from_learngene(learngene, n, num_blocks=depth),
        "weight_selection": lambda n: ViTIndividualModel.from_weight_selection(plain, n, num_blocks=depth),
        "scratch": lambda n: ViTIndividualModel(ViTIndividualConfig.for_learngene(learngene, n, num_blocks=depth)),
    }


def train_with_curve(build, images, labels, test_images, test_labels, args, seed: int) -> list[float]:
    """Test accuracy after every epoch of AdamW training (same seed -> same init of the fresh
    parts, batches and augmentation for every method)."""
    from learngene_hf.fewshot import _normalize

    num_labels = int(labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(num_labels)
    cfg = FewShotConfig(device="cpu", eval_batch_size=256)
    x = _normalize(images, torch.device("cpu"), model.config.image_mean, model.config.image_std)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(args.epochs):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                idx = order[start : start + 64]
                loss = model(augment_batch(x[idx], generator), labels=labels[idx]).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            curve.append(evaluate(model, test_images, test_labels, cfg))
    return curve


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


def moderate_budget(args, learngene, plain, train, test, novel) -> dict[str, Any]:
    x, y, tx, ty = novel_subset(train, test, novel, args.train_per_class, args.test_per_class)
    out: dict[str, Any] = {}
    for depth in args.depths:
        build = builders(learngene, plain, depth)
        curves = {m: [] for m in METHODS}
        started = time.perf_counter()
        for seed in range(args.seeds):
            for method in METHODS:
                curves[method].append(train_with_curve(build[method], x, y, tx, ty, args, seed=1000 + seed))
        finals = {m: [c[-1] for c in curves[m]] for m in METHODS}
        entry: dict[str, Any] = {"curves": curves, "seconds": time.perf_counter() - started}
        for m in METHODS:
            mean, half = mean_ci(finals[m])
            reach = [epochs_to_reach(c, s[-1]) for c, s in zip(curves[m], curves["scratch"])]
            entry[m] = {"final": finals[m], "mean": mean, "ci95": _finite(half), "epochs_to_scratch_final": reach}
            if m != "scratch":
                d, h = paired_difference(finals[m], finals["scratch"])
                entry[m]["diff_vs_scratch"] = {"mean": d, "ci95": _finite(h)}
        out[str(depth)] = entry
        print(f"moderate budget, depth {depth}: " + ", ".join(f"{m} {100 * entry[m]['mean']:.1f}" for m in METHODS)
              + f" ({entry['seconds']:.0f} s)", flush=True)
    return out


def few_shot(args, learngene, plain, train, novel) -> dict[str, Any]:
    episodes = sample_episodes(train, novel, args.episodes, ways=5, shots=args.shots, queries=15, seed=0)
    cfg = FewShotConfig(device="cpu")
    out: dict[str, Any] = {"recipe": cfg.to_dict()}
    for depth in args.depths:
        build = builders(learngene, plain, depth)
        started = time.perf_counter()
        rows = run_episodes([Method(m, build[m]) for m in METHODS], episodes, cfg, progress=False, seed=0)
        entry: dict[str, Any] = {"seconds": time.perf_counter() - started}
        scratch = [r["accuracy"]["scratch"] for r in rows]
        for m in METHODS:
            accs = [r["accuracy"][m] for r in rows]
            mean, half = mean_ci(accs)
            entry[m] = {"accuracies": accs, "mean": mean, "ci95": _finite(half)}
            if m != "scratch":
                d, h = paired_difference(accs, scratch)
                entry[m]["diff_vs_scratch"] = {"mean": d, "ci95": _finite(h)}
        out[str(depth)] = entry
        print(f"few-shot, depth {depth}: " + ", ".join(f"{m} {100 * entry[m]['mean']:.1f}" for m in METHODS), flush=True)
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pm(entry: dict, key: str = "mean", half: str = "ci95", sign: bool = False) -> str:
    mean, ci = entry[key], entry[half]
    text = f"{'+' if sign and mean >= 0 else ''}{100 * mean:.1f}"
    return text + (f" +/- {100 * ci:.1f}" if ci is not None else "")


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    sizes = results["sizes"]
    lines = [
        f"ViT descendants on the embedded data's {s['novel_classes']} novel classes, machine: "
        f"{results['machine'].get('gpu') or 'CPU, %d cores shared with other jobs (load average %.1f at start)' % (results['machine']['cpu_count'], results['machine']['load_average_at_start'][0])}.",
        "",
        f"Collective ViTs (width {s['embed_dim']}, {s['num_heads']} heads, patch {s['patch_size']} on 32x32, {s['collective_depth']} blocks): "
        f"{s['num_tasks']} five-way tasks of base classes, {s['collective_epochs']} epochs each, {s['collective_per_class']} images per class, "
        f"AdamW lr {s['collective_lr']}. Mean accuracy after each task: linear expansion {100 * results['collective']['linear']:.1f}%, "
        f"unconstrained {100 * results['collective']['none']:.1f}%.",
        "",
        f"Learngene: {sizes['learngene_parameters']:,} parameters, of which the base/increment pair holds {sizes['pair_parameters']:,} "
        f"= {100 * sizes['pair_fraction_of_unconstrained_blocks']:.1f}% (2/{s['collective_depth']}) of the block parameters of the unconstrained "
        f"{s['collective_depth']}-block ViT ({sizes['unconstrained_block_parameters']:,}).",
        "",
        f"**Moderate budget**: all {s['novel_classes']} novel classes, {s['train_per_class']} training and {s['test_per_class']} test images each, "
        f"{s['epochs']} epochs of AdamW (lr {s['lr']}, weight decay 0.05, batch 64, crop + flip), {s['seeds']} seeds; test accuracy in % "
        "(mean +/- 95% CI over seeds; differences paired by seed). 'epochs to scratch final': first epoch at which the method reaches "
        "scratch's final accuracy of the same seed (- = never).",
        "",
        "| depth | method | accuracy | vs scratch | epochs to scratch final |",
        "| ---: | --- | --- | --- | --- |",
    ]
    for depth, entry in results["moderate_budget"].items():
        for m in METHODS:
            e = entry[m]
            vs = _pm(e["diff_vs_scratch"], sign=True) if "diff_vs_scratch" in e else "-"
            reach = ", ".join("-" if r is None else str(r) for r in e["epochs_to_scratch_final"])
            lines.append(f"| {depth} | {m} | {_pm(e)} | {vs} | {reach} |")
    fs = results["few_shot"]
    lines += [
        "",
        f"**Few-shot**: 5-way {s['shots']}-shot, 15 queries per class, {s['episodes']} episodes, the library's default few-shot recipe "
        f"(SGD lr {fs['recipe']['lr']}, {fs['recipe']['epochs']} epochs, batch {fs['recipe']['batch_size']}); accuracy in %.",
        "",
        "| depth | method | accuracy | vs scratch |",
        "| ---: | --- | --- | --- |",
    ]
    for depth, entry in fs.items():
        if depth == "recipe":
            continue
        for m in METHODS:
            e = entry[m]
            vs = _pm(e["diff_vs_scratch"], sign=True) if "diff_vs_scratch" in e else "-"
            lines.append(f"| {depth} | {m} | {_pm(e)} | {vs} |")
    lines += ["", f"Total wall time {results['seconds'] / 60:.1f} min. Command: `{results['command']}`.", ""]
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
    info = machine()
    train, test = load_tensors(None, train_per_class=max(args.collective_per_class, args.train_per_class, 20),
                               test_per_class=max(args.test_per_class, 20))
    work = Path(args.work_dir)
    learngene, plain, runs = train_collectives(args, (train, test), work)
    novel = list(runs["linear"].split.novel)
    pair = sum(t.numel() for n, t in learngene.tensors.items() if n.startswith(("base.", "inc.")))
    unconstrained_blocks = sum(p.numel() for p in plain.vit.blocks.parameters())
    results: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("output_dir", "work_dir")} | {"novel_classes": len(novel)},
        "machine": info,
        "collective": {k: r.report["mean_accuracy_after"] for k, r in runs.items()},
        "sizes": {"learngene_parameters": learngene.num_parameters(), "pair_parameters": pair,
                  "unconstrained_block_parameters": unconstrained_blocks,
                  "pair_fraction_of_unconstrained_blocks": pair / unconstrained_blocks,
                  "descendant_parameters": {str(d): sum(p.numel() for p in builders(learngene, plain, d)["scratch"](len(novel)).parameters())
                                            for d in args.depths}},
        "moderate_budget": moderate_budget(args, learngene, plain, train, test, novel),
        "few_shot": few_shot(args, learngene, plain, train, novel),
        "command": "python benchmarks/vit_descendants.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    results["seconds"] = time.perf_counter() - started
    write_json_atomic(out / "vit_descendants.json", results)
    write_text_atomic(out / "vit_descendants.md", markdown(results))
    plot(results, out / "vit_descendants.png")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
