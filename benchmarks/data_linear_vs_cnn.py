"""Is the embedded dataset a real benchmark? Linear classifier on raw pixels vs a small CNN.

Both models see the same 20-class subset (by default the 20 novel classes of the default
64/16/20 split) with the same training images, on CPU, for a few epochs. The linear model is a
single linear layer (multinomial logistic regression) on normalized pixels; the CNN is a 3-block
conv-BN-ReLU-maxpool net; then a 5-way 5-shot
transfer check (pretrained early blocks vs random init). Writes ``benchmarks/results/data_linear_vs_cnn.{json,md}``.

    python benchmarks/data_linear_vs_cnn.py              # defaults, about 2 minutes on 2 CPU cores
    python benchmarks/data_linear_vs_cnn.py --source path/to/imagefolder --image-column image --label-column label
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from learngene_hf.data import (
    GENERATOR_VERSION,
    ImageTensors,
    load_tensors,
    normalize,
    parse_class_list,
    sample_episodes,
    split_classes,
)
from learngene_hf.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def small_cnn(num_classes: int, width: int = 32) -> nn.Module:
    """3 blocks of conv3x3-BN-ReLU-maxpool (width, 2*width, 4*width), global average pool, linear head."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(3, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def linear_model(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], num_classes))


def relabel(data: ImageTensors, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    sub = data.select(classes)
    lookup = torch.full((data.num_classes,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    return normalize(sub.images), lookup[sub.labels]


def train_eval(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        acc_test = sum(
            (model(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum().item() for i in range(0, len(xt), 1000)
        ) / len(xt)
        acc_train = sum(
            (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item() for i in range(0, len(x), 1000)
        ) / len(x)
    return {
        "test_accuracy": round(acc_test, 4),
        "train_accuracy": round(acc_train, 4),
        "train_seconds": round(train_s, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def few_shot_transfer(train: ImageTensors, test: ImageTensors, args: argparse.Namespace) -> dict:
    """Do features transfer between classes? Pretrain the small CNN on base classes, then train
    5-way 5-shot models on novel-class episodes from random init vs with the first conv block(s)
    copied from the pretrained net (all layers fine-tuned, BatchNorm statistics re-estimated)."""
    split = split_classes(train.num_classes, seed=args.seed)
    base = split.base[: args.pretrain_classes]
    x, y = relabel(train, base)
    xt, yt = relabel(test, base)
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.pretrain_images]
    pre = small_cnn(len(base), args.cnn_width)
    pretrain = train_eval(pre, x[keep], y[keep], xt, yt, args.pretrain_epochs, 3e-3, 5e-4, 64, args.seed)
    episodes = sample_episodes(test, split.novel, args.episodes, ways=5, shots=args.shots, queries=15, seed=args.seed)
    out = {
        "pretrain_classes": base,
        "pretrain_images": int(len(keep)),
        "pretrain": pretrain,
        "episodes": args.episodes,
        "ways": 5,
        "shots": args.shots,
        "queries": 15,
        "accuracy": {},
    }
    for label, modules in (("scratch", 0), ("inherit_block1", 4), ("inherit_blocks1-2", 8)):
        accs = []
        for ep in episodes:
            torch.manual_seed(args.seed * 1000 + ep.index)  # same fresh init for every variant
            model = small_cnn(5, args.cnn_width)
            for i in range(modules):
                model[i].load_state_dict(pre[i].state_dict())
            opt = torch.optim.Adam(model.parameters(), 3e-3)
            xs = normalize(ep.support_images)
            for _ in range(args.few_shot_steps):
                model.train()
                opt.zero_grad()
                nn.functional.cross_entropy(model(xs), ep.support_labels).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                accs.append((model(normalize(ep.query_images)).argmax(1) == ep.query_labels).float().mean().item())
        accs = np.asarray(accs)
        out["accuracy"][label] = {
            "mean": round(float(accs.mean()), 4),
            "ci95": round(float(1.96 * accs.std(ddof=1) / np.sqrt(len(accs))), 4),
        }
        print(f"5-way {args.shots}-shot, {label}: {out['accuracy'][label]}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--source", default=None, help="dataset (default: the embedded procedural dataset)")
    parser.add_argument("--image-column", default="img")
    parser.add_argument("--label-column", default="fine_label")
    parser.add_argument(
        "--classes", default=None, help="class ids, e.g. '0-19' (default: the novel classes of the default split)"
    )
    parser.add_argument("--num-classes", type=int, default=20, help="subset size when --classes is not given")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--linear-epochs", type=int, default=30)
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--cnn-width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-transfer", action="store_true", help="skip the few-shot transfer check")
    parser.add_argument("--pretrain-classes", type=int, default=32, help="base classes to pretrain on")
    parser.add_argument("--pretrain-images", type=int, default=9600)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--few-shot-steps", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "data_linear_vs_cnn"), help="output path without suffix")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train, test = load_tensors(args.source, image_column=args.image_column, label_column=args.label_column)
    full_train = train
    if args.classes:
        classes = parse_class_list(args.classes)
    else:
        novel = split_classes(train.num_classes, seed=args.seed).novel
        classes = novel[: args.num_classes]
    # Fixed per-class subsample of the training set.
    g = torch.Generator().manual_seed(args.seed)
    by_class = train.indices_by_class()
    keep = torch.cat(
        [by_class[c][torch.randperm(len(by_class[c]), generator=g)[: args.train_per_class]] for c in classes]
    )
    train = ImageTensors(train.images[keep], train.labels[keep], train.class_names)
    x, y = relabel(train, classes)
    xt, yt = relabel(test, classes)
    print(f"{len(classes)} classes, {len(x)} train / {len(xt)} test images, image {tuple(x.shape[1:])}")

    results = {}
    lin = linear_model(tuple(x.shape[1:]), len(classes))
    results["linear_on_pixels"] = train_eval(lin, x, y, xt, yt, args.linear_epochs, 3e-3, 1e-2, 256, args.seed)
    print("linear on pixels:", results["linear_on_pixels"])
    cnn = small_cnn(len(classes), args.cnn_width)
    results["small_cnn"] = train_eval(cnn, x, y, xt, yt, args.cnn_epochs, 3e-3, 5e-4, 64, args.seed)
    print("small CNN:", results["small_cnn"])

    if not args.no_transfer:
        results["few_shot_transfer"] = few_shot_transfer(full_train, test, args)

    record = {
        "benchmark": "data_linear_vs_cnn",
        "source": args.source or f"embedded ({GENERATOR_VERSION})",
        "classes": classes,
        "class_names": [train.class_names[c] for c in classes],
        "train_images": len(x),
        "test_images": len(xt),
        "chance_accuracy": round(1 / len(classes), 4),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "results": results,
        "machine": {
            "cpu_threads": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": "cpu",
        },
    }
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), record)
    lin_r, cnn_r = results["linear_on_pixels"], results["small_cnn"]
    md = (
        f"Linear classifier on raw pixels vs a small CNN, {len(classes)}-class subset of "
        f"{record['source']} ({len(x)} train / {len(xt)} test images; chance {record['chance_accuracy']:.1%}; "
        f"CPU, {args.threads} threads)\n\n"
        "| model | parameters | epochs | train acc | test acc | train time |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |\n"
        f"| linear on pixels | {lin_r['parameters']:,} | {args.linear_epochs} | {lin_r['train_accuracy']:.1%} | "
        f"**{lin_r['test_accuracy']:.1%}** | {lin_r['train_seconds']:.0f} s |\n"
        f"| small CNN (3 conv blocks, width {args.cnn_width}) | {cnn_r['parameters']:,} | {args.cnn_epochs} | "
        f"{cnn_r['train_accuracy']:.1%} | **{cnn_r['test_accuracy']:.1%}** | {cnn_r['train_seconds']:.0f} s |\n"
    )
    if "few_shot_transfer" in results:
        fs = results["few_shot_transfer"]
        md += (
            f"\nFeature transfer: the same CNN pretrained on {len(fs['pretrain_classes'])} base classes "
            f"({fs['pretrain_images']} images, {args.pretrain_epochs} epochs, "
            f"{fs['pretrain']['test_accuracy']:.1%} test accuracy), then 5-way {fs['shots']}-shot on novel "
            f"classes ({fs['episodes']} episodes, 15 queries per class, {args.few_shot_steps} Adam steps, "
            "all layers trained)\n\n| initialization | query accuracy (mean +/- 95% CI) |\n| --- | ---: |\n"
        )
        for label, acc in fs["accuracy"].items():
            md += f"| {label} | {acc['mean']:.1%} +/- {acc['ci95']:.1%} |\n"
    write_text_atomic(out.with_suffix(".md"), md)
    print(md)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
