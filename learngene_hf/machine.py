"""What a measurement ran on, for the records: every ``report.json`` (collective training),
``results.json`` (few-shot comparison) and ``summary.json`` (pipeline) holds
:func:`machine_record` under ``"machine"``.

The versions are read from the installed distributions (``importlib.metadata``), so nothing heavy
is imported for them; the device name needs torch, which every caller has imported already.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["machine_record", "device_name", "library_versions"]

#: The distributions whose versions a record names.
RECORDED_DISTRIBUTIONS = ("learngene-hf", "torch", "transformers", "timm", "accelerate", "huggingface_hub", "datasets")


def library_versions() -> dict[str, str | None]:
    """``{distribution: version}`` of Python and :data:`RECORDED_DISTRIBUTIONS` (``None``: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_name() -> str:
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)" if cores else name


def device_name(device: Any) -> str:
    """A readable name of a torch device: the GPU's model (``"NVIDIA H200"``) or the CPU's
    (``"AMD EPYC (2 cores)"``, the cores this process may use)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return _cpu_name() if device.type == "cpu" else str(device)


def machine_record(accelerator: Any | None = None, *, device: Any = None, mixed_precision: str | None = None) -> dict:
    """``mixed_precision``, ``device``, ``device_name``, ``processes``, ``torch_threads`` and
    ``versions`` (:func:`library_versions`) of a run: from ``accelerator`` when given, else from
    ``device`` (default: CPU) and ``mixed_precision`` (default ``"no"``)."""
    import torch

    if accelerator is not None:
        device = accelerator.device
        mixed_precision = str(accelerator.mixed_precision)
        processes = int(accelerator.num_processes)
    else:
        processes = 1
    device = torch.device(device if device is not None else "cpu")
    return {
        "mixed_precision": mixed_precision or "no",
        "device": str(device),
        "device_name": device_name(device),
        "processes": processes,
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
    }
