"""Collective training: a :class:`~learngene_hf.CollectiveModel` learns a stream of tasks with
``accelerate``, grows on a schedule, optionally consolidates with EWC, records its gradients,
scores the open world before every task, checkpoints after every task and resumes.

Entry point: :func:`train_collective` (a finished run folder is read back by
:func:`learngene_hf.training.run.load_run`). A run folder holds::

    model/                 save_pretrained of the final collective model
    gradient_record.json   the GradientRecord
    heatmap.png            layers x tasks heat map of the record
    report.json            class split, task stream, accuracies, open-world AUROC, images/s, dataset
    report.md              a short human-readable summary
    run_config.json        the training config, class split and dataset description
    open_world.safetensors class means and shared scatter of the embedding (Mahalanobis score,
                           gaussians/*) and the bank of normalised training embeddings (knn
                           score, knn/bank [M,D], knn/components [M], knn/per_class)
    checkpoint/            the state after the last finished task (used by resume): model/,
                           state.json, ewc.safetensors (Fisher and anchors, when EWC is on),
                           replay.safetensors (the replay memory, when on) and
                           open_world.safetensors

Determinism: every task starts by re-seeding all generators from ``(seed, task)`` and builds a fresh
optimizer (it has a new head anyway), so a run stopped after any task and resumed ends with the
same weights and record as an uninterrupted run.

:func:`train_collective` runs these steps in order: load the data, class split and task stream
(:func:`_load_stream`); start fresh or resume from the checkpoint (:func:`_start_or_resume`); train
every task (:func:`_train_task`: open-world scores before it, new head and growth, optimizer, the
epochs, the after-task evaluation, consolidation and memory, the checkpoint); the final
evaluation and outputs (:func:`_finish`). The neighbours: the config in
:mod:`~learngene_hf.training.config`, growth planning in :mod:`~learngene_hf.training.growth`,
data loading in :mod:`~learngene_hf.training.loading`, evaluation in
:mod:`~learngene_hf.training.evaluation`, checkpoints and :func:`~learngene_hf.training.run.load_run`
in :mod:`~learngene_hf.training.run`, the report in :mod:`~learngene_hf.training.report`.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from ..data.episodes import make_task_stream
from ..data.splits import split_classes
from ..errors import ConfigError
from ..flops import forward_flops
from ..io import write_json_atomic
from ..logs import get_logger
from ..models.collective import CollectiveModel
from ..models.modeling_utils import LOGIT_SCORES
from .config import RUN_FORMAT, RUN_VERSION, CollectiveTrainingConfig, resolve_mixed_precision
from .evaluation import embeddings, evaluate_task, open_world_aurocs
from .ewc import EWC, sgd_max_curvature
from .growth import apply_growth, new_collective_model, plan_growth
from .loading import class_arg, load_data, make_loader, model_inputs
from .openworld import ClassGaussians, FeatureBank
from .record import GradientRecord, GradientRecorder
from .replay import ReplayMemory
from .report import build_report, write_outputs
from .run import CollectiveRun, checkpoint_dir, read_checkpoint, run_lock, save_checkpoint

logger = get_logger(__name__)


# ---------------------------------------------------------------------------------------------- helpers
def task_seed(seed: int, task: int) -> int:
    """The seed every generator is reset to at the start of ``task``."""
    return (int(seed) * 1_000_003 + 7_919 * (int(task) + 1)) % (2**31 - 1)


def freeze_batchnorm_statistics(model: torch.nn.Module) -> int:
    """Put every BatchNorm layer of ``model`` in eval mode (running statistics stop updating, the
    affine parameters still train); returns how many layers it touched. Call after every
    ``model.train()``."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.eval()
    return len(layers)


def replay_loss(
    model: CollectiveModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    tasks: torch.Tensor,
    outlier_heads: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross-entropy, outlier exposure)`` of replayed ``images`` [R,C,H,W] (local ``labels`` [R]
    of tasks ``tasks`` [R]), from one pass through ``model.embed``: the mean cross-entropy of every
    image through its own task's head, and the mean cross-entropy to the uniform distribution
    (``logsumexp(z) - mean(z)``) of every head in ``outlier_heads`` on the images of the other tasks
    (0 without such heads or images)."""
    embedding = model.embed(model_inputs(images))
    total = torch.zeros((), device=embedding.device, dtype=torch.float32)
    for task in tasks.unique().tolist():
        rows = tasks == task
        logits = model.heads[task](embedding[rows]).float()
        total = total + nn.functional.cross_entropy(logits, labels[rows], reduction="sum")
    unsure = torch.zeros((), device=embedding.device, dtype=torch.float32)
    count = 0
    for head in outlier_heads:
        rows = tasks != head
        if bool(rows.any()):
            logits = model.heads[head](embedding[rows]).float()
            unsure = unsure + (torch.logsumexp(logits, 1) - logits.mean(1)).sum()
            count += int(rows.sum())
    return total / len(labels), unsure / max(count, 1)


def replay_open_world(
    model: CollectiveModel,
    replay: ReplayMemory,
    batch_size: int,
    device,
    bank_per_class: int,
    generator: torch.Generator | None = None,
) -> tuple[ClassGaussians, FeatureBank]:
    """The open-world statistics of the replay exemplars embedded by the current ``model``, one
    component per stored (task, local class) pair: :class:`ClassGaussians` (the within-class
    scatter pooled over them) and a :class:`FeatureBank` of up to ``bank_per_class`` exemplars
    per pair (a random subset drawn with ``generator`` when the memory keeps more)."""
    features = embeddings(model, replay.images, batch_size, device)
    ways = int(replay.labels.max()) + 1
    components = replay.tasks * ways + replay.labels
    gaussians = ClassGaussians()
    gaussians.add(features, components)
    bank = FeatureBank(bank_per_class)
    bank.add(features, components, generator=generator)
    return gaussians, bank


@dataclass
class _RunState:
    """What a run carries from one task to the next (all of it is saved in the checkpoint)."""

    model: CollectiveModel
    record: GradientRecord
    report_tasks: list[dict]
    events: list[dict]
    start_task: int
    ewc: EWC
    replay: ReplayMemory | None
    gaussians: ClassGaussians
    bank: FeatureBank


# ---------------------------------------------------------------------------------------------- steps
def _load_stream(config: CollectiveTrainingConfig, data):
    """``(train, split, tasks, dataset_description)``: the run's training images, class split and
    task stream."""
    train, test, dataset_description = load_data(config, data)
    split = split_classes(
        len(train.class_names),
        seed=config.split_seed,
        base=class_arg(config.base),
        open_world=class_arg(config.open_world),
        novel=class_arg(config.novel),
    )
    tasks = make_task_stream(
        train,
        test,
        list(split.base),
        config.num_tasks,
        ways=config.ways,
        seed=config.seed,
        train_per_class=config.train_per_class,
        test_per_class=config.test_per_class,
    )
    return train, split, tasks, dataset_description


def _start_or_resume(
    config: CollectiveTrainingConfig, run_dir: Path, model: CollectiveModel | None, train, resume: bool, main: bool
) -> _RunState:
    """The state before the first task to train: read from ``run_dir``'s checkpoint (``resume``
    and one exists) or fresh (the given ``model``, else a new one of ``config.preset``)."""
    checkpoint = checkpoint_dir(run_dir) if resume else None
    cap = sgd_max_curvature(config.lr, config.momentum) if config.ewc_cap and config.optimizer == "sgd" else None
    ewc = EWC(config.ewc_weight, max_curvature=cap)
    replay = ReplayMemory(config.replay_per_class, config.replay_selection) if config.replay_per_class else None
    gaussians = ClassGaussians()
    bank = FeatureBank(config.open_world_bank_per_class)
    if checkpoint is not None:
        model, record, report_tasks, events, start_task = read_checkpoint(
            checkpoint, run_dir, config, ewc, replay, gaussians, bank
        )
        if main:
            logger.info(f"resuming after task {start_task} of {config.num_tasks} (checkpoint in {checkpoint})")
    else:
        set_seed(config.seed)
        if model is None:
            model = new_collective_model(config.preset, int(train.images.shape[-1]))
        if config.open_world_method in LOGIT_SCORES:  # the default of model.open_world_score
            model.config.open_world_score = config.open_world_method
        if model.config.num_tasks:
            raise ConfigError(
                f"The starting model already has {model.config.num_tasks} task heads; give a model without heads "
                "(train_collective adds one per task)."
            )
        record = GradientRecord(config.thresholds)
        report_tasks = []
        if config.growth != "none" and not hasattr(model, "widen"):
            raise ConfigError(f"{type(model).__name__} cannot grow; train it with growth='none'.")
        events = [] if config.growth == "none" else plan_growth(config, model.config.layer_names, model.config.widths)
        start_task = 0
    return _RunState(model, record, report_tasks, events, start_task, ewc, replay, gaussians, bank)


@dataclass
class _Loop:
    """What every task of a run shares: the config, the accelerator, the stream, the state, the
    gradient recorder and where (and whether) to write."""

    config: CollectiveTrainingConfig
    accelerator: Any
    tasks: list
    state: _RunState
    recorder: GradientRecorder | None
    run_dir: Path
    main: bool
    progress: bool


@dataclass
class _Task:
    """One task while it trains: its index, data and seed, its report entry, and (after
    :func:`_begin_task`) its head, the prepared model, optimizer and loader."""

    index: int
    data: Any
    seed: int
    entry: dict
    head: int = -1
    wrapped: Any = None
    optimizer: Any = None
    loader: Any = None
    step: int = 0
    outlier_heads: tuple[int, ...] = ()
    replayed: int = 0


def _train_task(loop: _Loop, t: int) -> None:
    """Task ``t`` of the stream, start to checkpoint; appends its report entry to the state."""
    task = loop.tasks[t]
    seed_t = task_seed(loop.config.seed, t)
    set_seed(seed_t)
    current = _Task(t, task, seed_t, {"task": t, "classes": [int(c) for c in task.classes]})
    _score_open_world(loop, current)
    _begin_task(loop, current)
    _run_epochs(loop, current)
    _end_task(loop, current)
    state = loop.state
    loop.accelerator.free_memory()
    current.wrapped = current.optimizer = current.loader = None
    for h in state.model.heads:
        h.requires_grad_(True)
    state.report_tasks.append(current.entry)

    checkpoint_state = {
        "next_task": t + 1,
        "config": loop.config.to_dict(),
        "record": state.record.to_dict(),
        "tasks": state.report_tasks,
        "growth_events": state.events,
    }
    if loop.main:
        save_checkpoint(
            loop.run_dir, state.model, checkpoint_state, state.ewc, state.replay, state.gaussians, state.bank
        )
    loop.accelerator.wait_for_everyone()


def _score_open_world(loop: _Loop, current: _Task) -> None:
    """Open world: how unknown are the new task's images to the model so far? (AUROCs into the entry)"""
    config, state, t = loop.config, loop.state, current.index
    current.entry["open_world_auroc"] = None
    current.entry["open_world_aurocs"] = None
    if t > 0:
        known = torch.cat([loop.tasks[k].test_images for k in range(t)])
        generator = torch.Generator().manual_seed(current.seed)
        pick = torch.randperm(len(known), generator=generator)[: config.open_world_known]
        aurocs = open_world_aurocs(
            loop.accelerator, state.model, current.data.test_images, known[pick], state.gaussians,
            config.eval_batch_size, state.bank, config.open_world_knn_k,
        )  # fmt: skip
        current.entry["open_world_aurocs"] = aurocs
        current.entry["open_world_auroc"] = aurocs.get(config.open_world_method)


def _begin_task(loop: _Loop, current: _Task) -> None:
    """Add the task's head, apply its growth, and prepare a fresh optimizer and loader."""
    config, accelerator, model, t = loop.config, loop.accelerator, loop.state.model, current.index
    head = model.add_task(len(current.data.classes), id2label=current.data.id2label)
    current.entry["growth"] = apply_growth(model, loop.state.events, t, torch.Generator().manual_seed(current.seed + 1))
    model.to(accelerator.device)
    loop.state.ewc.sync(model)
    every_head = bool(config.outlier_exposure) and config.outlier_exposure_heads == "all"
    for index, h in enumerate(model.heads):
        h.requires_grad_(index == head or every_head)
    if config.outlier_exposure and t > 0:
        current.outlier_heads = tuple(range(len(model.heads))) if every_head else (head,)
    if loop.recorder is not None:
        loop.recorder.begin_task(t)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    task = current.data
    loader = make_loader(task.train_images, task.train_labels, config.batch_size, shuffle=True, seed=current.seed)
    current.head = head
    current.wrapped, current.optimizer, current.loader = accelerator.prepare(model, optimizer, loader)


def _run_epochs(loop: _Loop, current: _Task) -> None:
    """The ``epochs_per_task`` epochs of the task; their losses, time and images seen into its entry."""
    from tqdm.auto import tqdm

    config, accelerator, state, t = loop.config, loop.accelerator, loop.state, current.index
    bar = tqdm(
        total=config.epochs_per_task * len(current.loader),
        desc=f"task {t + 1}/{config.num_tasks}",
        disable=not (loop.progress and loop.main),
        leave=False,
    )
    losses, penalties, replayed, unsure = [], [], [], []
    seen = 0
    freeze_bn = config.bn_freeze_after > 0 and t >= config.bn_freeze_after
    replaying = state.replay is not None and len(state.replay) > 0
    replay_generator = torch.Generator().manual_seed(current.seed + 4)
    started = time.perf_counter()
    for epoch in range(config.epochs_per_task):
        if freeze_bn:
            freeze_batchnorm_statistics(state.model)
        sums, batches, images = _run_epoch(loop, current, replay_generator if replaying else None, bar)
        seen += images
        loss_sum, penalty_sum, replay_sum, oe_sum = sums
        if loop.recorder is not None:
            loop.recorder.end_epoch(t, epoch)
        mean_loss = float(accelerator.reduce(loss_sum / max(batches, 1), "mean"))
        losses.append(mean_loss)
        penalties.append(float(accelerator.reduce(penalty_sum / max(batches, 1), "mean")))
        replayed.append(float(accelerator.reduce(replay_sum / max(batches, 1), "mean")))
        unsure.append(float(accelerator.reduce(oe_sum / max(batches, 1), "mean")))
        bar.set_postfix(loss=f"{mean_loss:.3f}")
    seconds = time.perf_counter() - started
    bar.close()
    if loop.recorder is not None:
        loop.recorder.end_task(t)
    entry = current.entry
    entry["epoch_losses"] = losses
    entry["epoch_ewc_penalties"] = penalties
    entry["epoch_replay_losses"] = replayed
    if config.outlier_exposure:
        entry["epoch_outlier_exposure_losses"] = unsure
    entry["batchnorm_frozen"] = freeze_bn
    entry["train_seconds"] = seconds
    entry["train_images_seen"] = int(accelerator.reduce(torch.tensor(seen, device=accelerator.device), "sum"))
    # the arithmetic of training: forward + backward (3 forward passes) of every image, replayed ones included
    passes = int(accelerator.reduce(torch.tensor(seen + current.replayed, device=accelerator.device), "sum"))
    flops = forward_flops(state.model, tuple(current.data.train_images.shape[1:]))
    entry["train_gflop"] = 3 * flops * passes / 1e9


def _run_epoch(
    loop: _Loop, current: _Task, replay_generator: torch.Generator | None, bar
) -> tuple[tuple[torch.Tensor, ...], int, int]:
    """One pass over the task's loader (replaying stored images when ``replay_generator`` is given);
    returns the on-device ``(loss, penalty, replay loss, outlier-exposure loss)`` sums, the batches
    and the images seen."""
    config, accelerator, recorder = loop.config, loop.accelerator, loop.recorder
    model, ewc, replay = loop.state.model, loop.state.ewc, loop.state.replay
    optimizer = current.optimizer
    loss_sum = torch.zeros((), device=accelerator.device)
    penalty_sum = torch.zeros((), device=accelerator.device)
    replay_sum = torch.zeros((), device=accelerator.device)
    oe_sum = torch.zeros((), device=accelerator.device)
    batches = 0
    seen = 0
    for x, y in current.loader:
        out = current.wrapped(pixel_values=model_inputs(x), labels=y, task_id=current.head)
        loss = out.loss
        if ewc.active:
            penalty = ewc.penalty(model)
            penalty_sum += penalty.detach()
            loss = loss + penalty
        if replay_generator is not None:
            rx, ry, rt = replay.sample(config.replay_batch_size, replay_generator)
            device = accelerator.device
            rloss, oe = replay_loss(model, rx.to(device), ry.to(device), rt.to(device), current.outlier_heads)
            replay_sum += rloss.detach()
            oe_sum += oe.detach()
            current.replayed += int(rx.shape[0])
            loss = loss + rloss
            if current.outlier_heads:
                loss = loss + config.outlier_exposure * oe
        accelerator.backward(loss)
        if recorder is not None:
            if accelerator.scaler is not None:
                # fp16: record the true gradients, not the scaled ones (this task's optimizer only:
                # earlier tasks' optimizers share parameters and would unscale them twice)
                accelerator.unscale_gradients(optimizer)
            recorder.step()
        if config.lr_schedule != "constant" or config.warmup_epochs:
            total = config.epochs_per_task * len(current.loader)
            lr = config.lr_at(current.step, total, int(round(config.warmup_epochs * len(current.loader))))
            for group in optimizer.param_groups:
                group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        current.step += 1
        loss_sum += out.loss.detach().float()
        batches += 1
        seen += int(y.shape[0])
        bar.update(1)
    return (loss_sum, penalty_sum, replay_sum, oe_sum), batches, seen


def _end_task(loop: _Loop, current: _Task) -> None:
    """After the task's epochs: its accuracy, EWC consolidation, and what the model remembers of
    it (replay exemplars, open-world class statistics of its embedding)."""
    config, accelerator, state = loop.config, loop.accelerator, loop.state
    model, task, head, seed_t = state.model, current.data, current.head, current.seed
    batch = config.eval_batch_size
    current.entry["accuracy_after"] = evaluate_task(accelerator, model, task.test_images, task.test_labels, head, batch)
    current.entry["accuracy_end"] = None
    if config.ewc_weight > 0:
        fisher = make_loader(task.train_images, task.train_labels, config.batch_size, True, seed_t + 2)
        fisher_batches = (
            (model_inputs(x), y) for i, (x, y) in zip(range(config.ewc_batches), accelerator.prepare(fisher))
        )
        reduce = (lambda v: accelerator.reduce(v, "mean")) if accelerator.num_processes > 1 else None
        state.ewc.consolidate(model, fisher_batches, head, reduce=reduce)
        current.entry["ewc_capped_fraction"] = state.ewc.capped_fraction()
    # what the model remembers of this task: class statistics of its embedding and exemplars
    features = embeddings(model, task.train_images, batch, accelerator.device)
    if state.replay is not None:
        state.replay.add_task(current.index, task.train_images, task.train_labels, list(task.classes), features,
                              generator=torch.Generator().manual_seed(seed_t + 3))  # fmt: skip
    if config.open_world_from_replay:  # validate() ensures replay is on: every class from its exemplars, rebuilt
        state.gaussians, state.bank = replay_open_world(
            model, state.replay, batch, accelerator.device, config.open_world_bank_per_class,
            torch.Generator().manual_seed(seed_t + 5),
        )  # fmt: skip
    else:
        state.gaussians.add(features, task.train_labels)
        state.bank.add(features, task.train_labels, generator=torch.Generator().manual_seed(seed_t + 5))


def _finish(
    config: CollectiveTrainingConfig,
    accelerator,
    tasks: list,
    split,
    dataset_description: dict,
    state: _RunState,
    run_dir: Path,
    main: bool,
) -> CollectiveRun:
    """The final evaluation of every finished task, the report and the run folder's outputs."""
    model, report_tasks = state.model, state.report_tasks
    for t in range(len(report_tasks)):
        report_tasks[t]["accuracy_end"] = evaluate_task(
            accelerator, model, tasks[t].test_images, tasks[t].test_labels, t, config.eval_batch_size
        )
    accelerator.free_memory()
    model.eval()
    report = build_report(
        config, accelerator, model, split, tasks, report_tasks, dataset_description, state.replay, state.bank
    )
    state.record.layer_names = list(model.config.layer_names)
    model = model.to("cpu")
    if main:
        write_outputs(run_dir, model, state.record, report, config, state.gaussians, state.bank)
    accelerator.wait_for_everyone()
    return CollectiveRun(model=model, record=state.record, report=report, split=split, config=config, run_dir=run_dir)


# ---------------------------------------------------------------------------------------------- training
def train_collective(
    config: CollectiveTrainingConfig,
    output_dir: str | os.PathLike,
    *,
    model: CollectiveModel | None = None,
    data=None,
    accelerator=None,
    resume: bool = True,
    progress: bool = True,
) -> CollectiveRun:
    """Train a collective model on a task stream and write the run folder (see module docstring).

    Args:
        config: the run's :class:`~learngene_hf.training.config.CollectiveTrainingConfig`.
        output_dir: the run folder (created; only the main process writes).
        model: a starting :class:`CollectiveModel` (default: a fresh one of ``config.preset``).
        data: ``(train, test)`` :class:`~learngene_hf.data.ImageTensors` to use instead of loading
            ``config.dataset``.
        accelerator: an ``accelerate.Accelerator`` (default: one with ``config.mixed_precision``).
        resume: continue from ``output_dir/checkpoint`` when it exists (same config required).
        progress: show a tqdm bar per task (main process only).

    Returns:
        A :class:`~learngene_hf.training.run.CollectiveRun` (model in eval mode, on the CPU).
    """
    config.validate()
    run_dir = Path(output_dir)
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config.mixed_precision))
    main = accelerator.is_main_process
    with run_lock(run_dir) if main else contextlib.nullcontext():  # one writer per run folder
        train, split, tasks, dataset_description = _load_stream(config, data)
        run_config = {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "training": config.to_dict(),
            "class_split": split.to_dict(),
            "dataset": dataset_description,
        }
        state = _start_or_resume(config, run_dir, model, train, resume, main)
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / "run_config.json", run_config)
        state.model.to(accelerator.device)
        state.model.train()
        recorder = GradientRecorder(state.model, config.thresholds, state.record) if config.record_gradients else None
        if recorder is None:
            state.record.layer_names = list(state.model.config.layer_names)

        stop = config.num_tasks if config.stop_after_task is None else min(config.num_tasks, config.stop_after_task)
        loop = _Loop(config, accelerator, tasks, state, recorder, run_dir, main, progress)
        for t in range(state.start_task, stop):
            _train_task(loop, t)
        return _finish(config, accelerator, tasks, split, dataset_description, state, run_dir, main)
