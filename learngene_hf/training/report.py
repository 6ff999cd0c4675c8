"""The report of a collective run and the run folder's final outputs.

:func:`build_report` assembles ``report.json`` at the end of a run (class split, task stream,
per-task accuracies and open-world AUROCs, forgetting control, model size, devices) and
:func:`summarise` adds its means; :func:`report_markdown` is the short human-readable
``report.md``; :func:`write_outputs` writes the final model, gradient record, heat map, open-world
statistics and both reports. The checkpoint written after every task is
:mod:`learngene_hf.training.run`'s; the trainer is :mod:`learngene_hf.training.trainer`.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from ..io import follow_umask, write_json_atomic, write_text_atomic
from ..machine import machine_record
from ..models.collective import CollectiveModel
from .config import RUN_FORMAT, RUN_VERSION, CollectiveTrainingConfig
from .openworld import ClassGaussians, FeatureBank
from .record import GradientRecord
from .replay import ReplayMemory
from .run import open_world_tensors, save_model


def build_report(
    config: CollectiveTrainingConfig,
    accelerator,
    model: CollectiveModel,
    split,
    tasks: list,
    report_tasks: list[dict],
    dataset_description: dict,
    replay: ReplayMemory | None,
    bank: FeatureBank,
) -> dict[str, Any]:
    """``report.json`` of a run whose ``report_tasks`` are finished (``tasks``: the whole planned
    stream), with the means of :func:`summarise`."""
    finished = len(report_tasks)
    report = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "complete": finished == config.num_tasks,
        "num_tasks": config.num_tasks,
        "finished_tasks": finished,
        "ways": config.ways,
        "preset": config.preset,
        "class_split": split.to_dict(),
        "task_stream": [[int(c) for c in task.classes] for task in tasks],
        "tasks": report_tasks,
        "dataset": dataset_description,
        "open_world_method": config.open_world_method,
        "forgetting_control": {
            "bn_freeze_after": config.bn_freeze_after,
            "ewc_weight": config.ewc_weight,
            "replay_per_class": config.replay_per_class,
            "replay_selection": config.replay_selection if config.replay_per_class else None,
            "replay_batch_size": config.replay_batch_size if config.replay_per_class else None,
            "replay_images": len(replay) if replay is not None else 0,
            "open_world_from_replay": config.open_world_from_replay,
        },
        "open_world_knn": {
            "k": config.open_world_knn_k,
            "bank_per_class": config.open_world_bank_per_class,
            "bank_size": len(bank),
        },
        "growth_log": [dict(e) for e in model.config.growth_log],
        "final_widths": list(getattr(model.config, "widths", [])),
        "layer_names": list(model.config.layer_names),
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": str(accelerator.mixed_precision),
        "machine": machine_record(accelerator),
    }
    summarise(report)
    return report


def summarise(report: dict) -> None:
    """Add the means over ``report["tasks"]`` (accuracy after / at the end, forgetting, open-world
    AUROC, per score) and the training throughput to ``report``: images/s, and the arithmetic
    (GFLOP of forward + backward passes, replayed images included) and its rate."""
    tasks = report["tasks"]
    after = [t["accuracy_after"] for t in tasks]
    end = [t["accuracy_end"] for t in tasks if t.get("accuracy_end") is not None]
    aurocs = [t["open_world_auroc"] for t in tasks if t.get("open_world_auroc") is not None]
    report["mean_accuracy_after"] = sum(after) / len(after) if after else None
    report["mean_accuracy_end"] = sum(end) / len(end) if end else None
    report["mean_forgetting"] = (
        sum(t["accuracy_after"] - t["accuracy_end"] for t in tasks) / len(tasks)
        if end and len(end) == len(tasks)
        else None
    )
    report["mean_open_world_auroc"] = sum(aurocs) / len(aurocs) if aurocs else None
    per_score: dict[str, list[float]] = {}
    for t in tasks:
        for name, value in (t.get("open_world_aurocs") or {}).items():
            per_score.setdefault(name, []).append(value)
    report["mean_open_world_aurocs"] = {name: sum(v) / len(v) for name, v in per_score.items()}
    seconds = sum(t["train_seconds"] for t in tasks)
    report["images_per_second"] = sum(t["train_images_seen"] for t in tasks) / seconds if seconds > 0 else None
    report["train_seconds"] = seconds
    gflop = [t["train_gflop"] for t in tasks if t.get("train_gflop") is not None]
    report["train_gflop"] = sum(gflop) if gflop and len(gflop) == len(tasks) else None
    report["gflops_per_second"] = report["train_gflop"] / seconds if report["train_gflop"] and seconds > 0 else None


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report_markdown(report: dict) -> str:
    """``report.md``: the run's summary lines and one table row per finished task."""
    lines = [
        "# Collective training run",
        "",
        f"- Dataset: `{report['dataset']['source']}` ({report['dataset']['num_classes']} classes); "
        f"{report['finished_tasks']}/{report['num_tasks']} tasks of {report['ways']} ways"
        + ("" if report["complete"] else " (stopped early: run again to resume)"),
        f"- Model: preset `{report['preset']}`, final conv widths {report['final_widths']}, "
        f"{report['parameters']:,} parameters, {len(report['growth_log'])} growth events",
        f"- Mean accuracy after learning each task: {_fmt(report['mean_accuracy_after'])}; at the end: "
        f"{_fmt(report['mean_accuracy_end'])} (mean forgetting {_fmt(report['mean_forgetting'])})",
        f"- Mean open-world AUROC ({report['open_world_method']}): {_fmt(report['mean_open_world_auroc'])}"
        + (
            " (" + ", ".join(f"{k} {_fmt(v)}" for k, v in report.get("mean_open_world_aurocs", {}).items()) + ")"
            if report.get("mean_open_world_aurocs")
            else ""
        ),
        f"- Forgetting control: {report['forgetting_control']}",
        f"- Training throughput: {_fmt(report['images_per_second'], 1)} images/s "
        f"({_fmt(report.get('gflops_per_second'), 1)} GFLOP/s over {_fmt(report.get('train_gflop'), 0)} GFLOP) on "
        f"{report['num_processes']} process(es), device `{report['device']}`, mixed precision "
        f"`{report['mixed_precision']}`",
        "",
        "| task | classes | acc. after | acc. end | open-world AUROC | growth |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for t in report["tasks"]:
        growth = ", ".join(f"{g['op']} {g['name']} {g['old_width'] or ''}->{g['new_width']}" for g in t["growth"]) or ""
        lines.append(
            f"| {t['task']} | {t['classes']} | {_fmt(t['accuracy_after'])} | {_fmt(t.get('accuracy_end'))} | "
            f"{_fmt(t.get('open_world_auroc'))} | {growth} |"
        )
    lines += ["", "Heat map of the gradient record: `heatmap.png`.", ""]
    return "\n".join(lines)


def write_outputs(
    run_dir: Path,
    model: CollectiveModel,
    record: GradientRecord,
    report: dict,
    config: CollectiveTrainingConfig,
    gaussians: ClassGaussians,
    bank: FeatureBank,
) -> None:
    """Write the run folder's final outputs: ``model/``, ``gradient_record.json``, ``heatmap.png``
    (when epochs were recorded), ``open_world.safetensors``, ``report.json`` and ``report.md``."""
    from safetensors.torch import save_file

    from ..plots.heatmap import plot_gradient_heatmap

    tmp = run_dir / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tmp)
    if (run_dir / "model").exists():
        shutil.rmtree(run_dir / "model")
    os.replace(tmp, run_dir / "model")
    record.save(run_dir / "gradient_record.json")
    if record.epochs:
        plot_gradient_heatmap(record, run_dir / "heatmap.png", "frac_above", config.heatmap_threshold)
    open_world = open_world_tensors(gaussians, bank)
    if open_world:
        tmp_file = run_dir / ".open_world.safetensors.tmp"
        save_file(open_world, str(tmp_file))
        follow_umask(tmp_file)
        os.replace(tmp_file, run_dir / "open_world.safetensors")
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", report_markdown(report))
