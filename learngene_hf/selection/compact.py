"""Learngenes that carry more per byte, and the choice among them under a budget of bytes.

The selected learngene is a run of full-width layers. For the same bytes a learngene can instead
be deeper and narrower (weight selection by channels, :func:`budget_candidates`), and such a
narrow copy can be trained to imitate the collective model's feature map at its depth
(:func:`distill_learngene`, the way TLEG trains its auxiliary model from a larger one).
:func:`select_under_budget` probes every candidate that fits the budget on the open-world
classes and keeps the best, as the validated selection does for full-width blocks.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..artifact.learngene import Learngene
from ..artifact.narrow import widths_for_budget
from ..data.tensors import normalize
from ..errors import ConfigError, DataError
from ..logs import get_logger
from ..models.layers import BLOCK_TENSOR_NAMES, conv_block, run_blocks
from ..stats import mean_ci

logger = get_logger(__name__)


def budget_candidates(
    model: Any, max_bytes: int, depths: Sequence[int] | None = None, **metadata: Any
) -> dict[str, Learngene]:
    """Input-end learngenes of the collective ``model`` that take at most ``max_bytes``: for each
    depth ``d`` of ``depths`` (default: every depth), its first ``d`` conv layers at the widest
    uniform scale that fits (:func:`~learngene_hf.artifact.narrow.widths_for_budget`). Named
    ``first_d`` at full width, ``narrow_d`` when narrowed (its widths are in
    ``config.source["channel_selection"]``); depths whose narrowest copy does not fit are left
    out. ``metadata`` goes to :meth:`Learngene.from_collective`."""
    if max_bytes <= 0:
        raise ConfigError(f"max_bytes must be positive, got {max_bytes}.")
    n = int(model.config.num_layers)
    depths = list(range(1, n + 1)) if depths is None else [int(d) for d in depths]
    bad = [d for d in depths if not 1 <= d <= n]
    if bad:
        raise ConfigError(f"depths {bad} are out of range: the collective model has {n} conv layers (1..{n}).")
    out: dict[str, Learngene] = {}
    for depth in depths:
        layers = list(range(depth))
        widths = widths_for_budget(model, layers, max_bytes)
        if widths is None:
            continue
        full = [int(model.blocks[i].conv.out_channels) for i in layers]
        name = f"first_{depth}" if widths == full else f"narrow_{depth}"
        out[name] = Learngene.from_collective(model, layers, widths=widths, **copy.deepcopy(metadata))
    return out


def _student(learngene: Learngene) -> nn.ModuleList:
    rows = learngene.config.layers
    blocks = nn.ModuleList(
        conv_block(int(r["in_channels"]), int(r["out_channels"]), int(r["kernel_size"])) for r in rows
    )
    for j, block in enumerate(blocks):
        block.load_state_dict(learngene.block_state_dict(j))
    return blocks


@torch.no_grad()
def _teacher_maps(collective: Any, x: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The collective's map entering layer ``start`` and leaving layer ``end - 1``."""
    pool = collective.config.pool
    entering = run_blocks(collective.blocks, pool, x, 0, start)
    return entering, run_blocks(collective.blocks, pool, entering, start, end)


def distill_learngene(
    learngene: Learngene,
    collective: Any,
    images: torch.Tensor,
    *,
    epochs: int = 3,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> Learngene:
    """``learngene`` (a run of conv layers of ``collective``, e.g. a narrow one of
    :func:`budget_candidates`) trained to imitate the collective model's feature map at its depth.

    A fresh 1x1 convolution maps the learngene's output [B, w, h, h] to the collective's map
    after the same layer [B, W, h, h]; both train to minimise the mean squared error, each channel
    scaled by the collective map's standard deviation, for ``epochs`` passes over ``images``
    (uint8 [N, 3, H, W]: images the collective model trained on, never novel or open-world
    classes), mirrored at random, with AdamW and a cosine schedule. Returns a new learngene
    (BatchNorm statistics re-estimated on ``images``); ``config.source["distillation"]`` records
    the settings and the loss before and after.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError("distill_learngene takes uint8 images [N, 3, H, W] the collective model trained on.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}.")
    rows = learngene.config.layers
    start, end = int(rows[0]["source_index"]), int(rows[-1]["source_index"]) + 1
    device = torch.device(device or "cpu")
    teacher = copy.deepcopy(collective).to(device).eval()
    student = _student(learngene).to(device).train()
    width = int(teacher.blocks[end - 1].conv.out_channels)
    projection = nn.Conv2d(int(rows[-1]["out_channels"]), width, 1).to(device)
    pool = [bool(r["pool"]) for r in rows]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    steps = epochs * math.ceil(len(images) / batch_size)
    params = list(student.parameters()) + list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    scale = _target_scale(teacher, images, start, end, device)

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        entering, target = _teacher_maps(teacher, batch, start, end)
        output = projection(run_blocks(student, pool, entering))
        return ((output - target) / scale).pow(2).mean()

    before = _mean_loss(loss_of, images, batch_size, device, student)
    student.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), batch_size):
            batch = normalize(images[order[i : i + batch_size]].to(device))
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch[flip.to(device)] = batch[flip.to(device)].flip(-1)
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        logger.info(f"distillation: epoch {epoch + 1}/{epochs}, last batch loss {loss.item():.4f}")
    after = _mean_loss(loss_of, images, batch_size, device, student)
    tensors = {f"blocks.{j}.{name}": block.state_dict()[name].detach().to("cpu").clone().contiguous()
               for j, block in enumerate(student) for name in BLOCK_TENSOR_NAMES}  # fmt: skip
    config = copy.deepcopy(learngene.config)
    config.source = dict(config.source or {})
    config.source["distillation"] = {
        "target": f"the collective model's map after {rows[-1]['name']} ({width} channels), via a fresh 1x1 conv",
        "images": int(len(images)), "epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
        "seed": int(seed), "loss_before": before, "loss_after": after,
    }  # fmt: skip
    return Learngene(config, tensors)


@torch.no_grad()
def _target_scale(teacher: Any, images: torch.Tensor, start: int, end: int, device: torch.device) -> torch.Tensor:
    """Per-channel standard deviation [1, W, 1, 1] of the collective's map (on up to 512 images)."""
    _, target = _teacher_maps(teacher, normalize(images[:512].to(device)), start, end)
    return target.transpose(0, 1).flatten(1).std(dim=1).clamp_min(1e-3).view(1, -1, 1, 1)


@torch.no_grad()
def _mean_loss(loss_of, images, batch_size, device, student: nn.Module) -> float:
    """Mean distillation loss over ``images`` (the student's BatchNorm in eval mode)."""
    student.eval()
    starts = range(0, len(images), batch_size)
    losses = [float(loss_of(normalize(images[i : i + batch_size].to(device)))) for i in starts]
    return sum(losses) / len(losses)


def select_under_budget(
    candidates: dict[str, Learngene], probe: Callable[[Learngene], Sequence[float] | dict[str, Any]], max_bytes: int
) -> dict[str, Any]:
    """Probe every candidate learngene of at most ``max_bytes`` and keep the best mean accuracy.

    ``probe(learngene) -> accuracies`` (one per open-world episode, the same for every candidate),
    or ``-> {"accuracies": [...], ...}`` whose other entries are kept. Returns ``{"chosen": name,
    "max_bytes", "candidates": {name: {"bytes", "parameters", "mean", "ci95", "accuracies", ...}
    or {"bytes", "parameters", "skipped"}}, "reason"}``."""
    if not candidates:
        raise ConfigError("select_under_budget needs at least one candidate learngene.")
    table: dict[str, dict[str, Any]] = {}
    for name, learngene in candidates.items():
        row: dict[str, Any] = {"bytes": learngene.num_bytes(), "parameters": learngene.num_parameters()}
        if row["bytes"] > max_bytes:
            row["skipped"] = f"{row['bytes']:,} bytes, more than the budget of {max_bytes:,}"
        else:
            result = probe(learngene)
            extra = dict(result) if isinstance(result, dict) else {"accuracies": list(result)}
            accuracies = [float(a) for a in extra.pop("accuracies")]
            if not accuracies:
                raise ConfigError("The probe returned no accuracies; give it at least one open-world episode.")
            mean, half = mean_ci(accuracies)
            row.update(extra, accuracies=accuracies, mean=float(mean), ci95=float(half))
            logger.info(f"budget selection: {name}: {100 * mean:.1f}% on the open-world probes")
        table[name] = row
    probed = [name for name, row in table.items() if "mean" in row]
    if not probed:
        raise ConfigError(
            f"No candidate fits the budget of {max_bytes:,} bytes (smallest: "
            f"{min(r['bytes'] for r in table.values()):,}); raise the budget."
        )
    chosen = max(probed, key=lambda name: (table[name]["mean"], -probed.index(name)))
    others = ", ".join(f"{n} {100 * table[n]['mean']:.1f}%" for n in probed if n != chosen)
    reason = (
        f"{chosen} had the best mean open-world probe accuracy under {max_bytes:,} bytes, "
        f"{100 * table[chosen]['mean']:.1f}% +/- {100 * table[chosen]['ci95']:.1f}; others: {others or 'none'}."
    )
    return {"chosen": chosen, "max_bytes": int(max_bytes), "candidates": table, "reason": reason}


def budget_table(result: dict[str, Any]) -> str:
    """Markdown of a :func:`select_under_budget` result: each candidate's layers, widths, bytes and
    open-world probe accuracy, the chosen one marked."""
    lines = ["| candidate | inherited bytes | open-world probe accuracy |", "| --- | ---: | --- |"]
    for name, row in result["candidates"].items():
        mark = " (chosen)" if name == result["chosen"] else ""
        probe = (
            f"{100 * row['mean']:.1f}% +/- {100 * row['ci95']:.1f}"
            if "mean" in row
            else f"not probed: {row['skipped']}"
        )
        lines.append(f"| {name}{mark} | {row['bytes']:,} | {probe} |")
    return "\n".join(lines)
