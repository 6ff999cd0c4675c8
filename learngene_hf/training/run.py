"""A collective run on disk: the finished run (:class:`CollectiveRun`, :func:`load_run`) and the
checkpoint a stopped run resumes from.

:func:`save_checkpoint` writes ``checkpoint/`` atomically after every task (model, ``state.json``,
EWC, replay memory and open-world statistics); :func:`checkpoint_dir` finds it again and
:func:`read_checkpoint` loads it after :func:`config_differences` found the saved config equal to
the new one. :func:`save_model` / :func:`load_model` write and read a collective model folder
quietly; every tensor read back is checked (finite values, non-negative BatchNorm variances).
:func:`run_lock` keeps one writer per run folder: the training run holds ``.run.lock`` (and names
itself in ``.run.lock.json``), so a second run on the same folder stops at once with an error naming
the first, and a lock left by a killed run is taken over. The run folder's layout is described in
:mod:`learngene_hf.training.trainer`, which writes it; the final outputs (report, heat map) are
written by :mod:`learngene_hf.training.report`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import torch

from ..artifact.config import check_tensor_values
from ..data.splits import ClassSplit
from ..errors import ArtifactError, ConfigError, DataError
from ..io import follow_umask, read_json, writable_folder, write_json_atomic
from ..logs import get_logger
from ..models.collective import CollectiveModel
from .config import CollectiveTrainingConfig
from .ewc import EWC
from .openworld import ClassGaussians, FeatureBank
from .record import GradientRecord
from .replay import ReplayMemory

# fields that may differ between a run and its resumption
_RESUME_FREE_FIELDS = ("stop_after_task", "eval_batch_size")
LOCK_NAME = ".run.lock"
LOCK_INFO_NAME = ".run.lock.json"
logger = get_logger(__name__)


@dataclass
class CollectiveRun:
    """A finished (or stopped) collective training run, as returned by
    :func:`~learngene_hf.training.trainer.train_collective` and :func:`load_run`."""

    model: CollectiveModel
    record: GradientRecord
    report: dict
    split: Any
    config: CollectiveTrainingConfig
    run_dir: Path


# ---------------------------------------------------------------------------------------------- checkpoint
def open_world_tensors(gaussians: ClassGaussians, bank: FeatureBank) -> dict[str, torch.Tensor]:
    """What ``open_world.safetensors`` holds: the Gaussians and the knn bank, whichever is filled."""
    tensors = dict(gaussians.state_tensors()) if len(gaussians) else {}
    if len(bank):
        tensors.update(bank.state_tensors())
    return tensors


def save_checkpoint(
    run_dir: Path,
    model: CollectiveModel,
    state: dict,
    ewc: EWC,
    replay: ReplayMemory | None,
    gaussians: ClassGaussians,
    bank: FeatureBank,
) -> None:
    """Write ``checkpoint/`` atomically: a temp folder, then renames (old one removed last)."""
    from safetensors.torch import save_file

    final = run_dir / "checkpoint"
    tmp = run_dir / ".checkpoint.tmp"
    old = run_dir / ".checkpoint.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, tmp / "model")
    tensors = ewc.state_tensors()
    if tensors:
        save_file(tensors, str(tmp / "ewc.safetensors"))
        follow_umask(tmp / "ewc.safetensors")
    if replay is not None and len(replay):
        save_file(replay.state_tensors(), str(tmp / "replay.safetensors"))
        follow_umask(tmp / "replay.safetensors")
    open_world = open_world_tensors(gaussians, bank)
    if open_world:
        save_file(open_world, str(tmp / "open_world.safetensors"))
        follow_umask(tmp / "open_world.safetensors")
    write_json_atomic(tmp / "state.json", state)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def checkpoint_dir(run_dir: Path) -> Path | None:
    """The checkpoint folder of ``run_dir`` that holds a ``state.json``, or None."""
    for name in ("checkpoint", ".checkpoint.old"):  # .old survives a kill between the two renames
        folder = run_dir / name
        if (folder / "state.json").is_file():
            return folder
    return None


def read_checkpoint(
    checkpoint: Path,
    run_dir: Path,
    config: CollectiveTrainingConfig,
    ewc: EWC,
    replay: ReplayMemory | None,
    gaussians: ClassGaussians,
    bank: FeatureBank,
) -> tuple[CollectiveModel, GradientRecord, list[dict], list[dict], int]:
    """Load the run state saved in ``checkpoint`` (a folder of ``run_dir``) for a run of ``config``.

    Fills ``ewc``, ``replay``, ``gaussians`` and ``bank`` from their saved tensors and returns
    ``(model, record, report_tasks, growth_events, next_task)``. A saved config that differs from
    ``config`` raises :class:`ConfigError`, an unreadable checkpoint :class:`ArtifactError`.
    """
    fresh_start = "pass resume=False (--no-resume) to start over, or choose another output folder"
    try:
        state = read_json(checkpoint / "state.json")
        saved_config = state["config"]
    except (ArtifactError, KeyError, TypeError) as err:
        raise ArtifactError(f"The checkpoint in {checkpoint} cannot be read ({err}); {fresh_start}.") from err
    differences = config_differences(saved_config, config.to_dict())
    if differences:
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({differences}); resume it with the same options, "
            f"{fresh_start}."
        )
    try:
        model = load_model(checkpoint / "model")
        record = GradientRecord.from_dict(state["record"])
        report_tasks = list(state["tasks"])
        events = state["growth_events"]
        start_task = int(state["next_task"])
        if (checkpoint / "ewc.safetensors").is_file():
            ewc.load_state_tensors(load_checked(checkpoint / "ewc.safetensors"))
        if replay is not None and (checkpoint / "replay.safetensors").is_file():
            replay.load_state_tensors(load_checked(checkpoint / "replay.safetensors"))
        if (checkpoint / "open_world.safetensors").is_file():
            open_world = load_checked(checkpoint / "open_world.safetensors")
            gaussians.load_state_tensors(open_world)
            bank.load_state_tensors(open_world)
    except (ArtifactError, DataError, KeyError, TypeError, ValueError, OSError) as err:
        raise ArtifactError(f"The checkpoint in {checkpoint} is corrupt or incomplete ({err}); {fresh_start}.") from err
    return model, record, report_tasks, events, start_task


# ---------------------------------------------------------------------------------------------- models
@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and shard progress bars (restored afterwards)."""
    from transformers import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def save_model(model: CollectiveModel, folder: Path) -> None:
    """``model.save_pretrained(folder)`` without transformers' messages, with umask permissions."""
    with quiet_transformers():
        model.save_pretrained(folder)
    follow_umask(folder)  # safetensors writes model.safetensors as 0600


def load_model(folder: Path) -> CollectiveModel:
    """The collective model saved in ``folder`` (float32; never code from the folder); :class:`ArtifactError`
    when it cannot be loaded or holds non-finite values or negative BatchNorm variances."""
    try:
        with quiet_transformers():
            from transformers import AutoModelForImageClassification

            model = AutoModelForImageClassification.from_pretrained(
                folder, dtype=torch.float32, trust_remote_code=False
            )
    except Exception as err:  # noqa: BLE001 - report which folder is bad
        raise ArtifactError(
            f"Cannot load the collective model from {folder} ({err}); re-run train_collective."
        ) from err
    check_tensor_values(dict(model.state_dict()), f"The collective model in {folder}", DIVERGED)
    return model


DIVERGED = (
    "The run diverged (or the file was damaged): start it over with a lower lr (--no-resume), or use an earlier "
    "copy of the run."
)


def load_checked(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's safetensors file, checked like a model's (:func:`load_model`)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    check_tensor_values(tensors, str(path), DIVERGED)
    return tensors


# ---------------------------------------------------------------------------------------------- one writer
def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def lock_holder(run_dir: Path) -> dict[str, Any]:
    """What ``.run.lock.json`` says about the run holding (or last holding) the lock: ``pid``,
    ``host``, ``started``, ``command`` (empty when unknown)."""
    try:
        info = read_json(Path(run_dir) / LOCK_INFO_NAME)
    except ArtifactError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that did not say which"
    text = f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
    return f"{text}: {holder['command']}" if holder.get("command") else text


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of the run folder ``run_dir`` (created) for the block: one writer per folder.

    A second process gets :class:`ArtifactError` at once, naming the process that holds it (from
    ``.run.lock.json``). The lock is an OS file lock (``filelock``), so a killed run leaves no lock
    behind: its stale ``.run.lock.json`` (a pid that no longer runs) is taken over with a message.
    A ``run_dir`` that is a file or cannot be written raises :class:`ArtifactError` before any work.
    """
    from filelock import FileLock, Timeout

    run_dir = writable_folder(run_dir, "the run folder (--output-dir)")
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ArtifactError(
            f"{run_dir} is being written by another training run ({_describe(lock_holder(run_dir))}); wait for it "
            "to finish (or stop it), or give this run another --output-dir."
        ) from None
    try:
        previous = lock_holder(run_dir)
        same_host = previous.get("host") == socket.gethostname()
        if previous and same_host and not _pid_alive(previous.get("pid")):
            logger.info(
                f"{run_dir}: the run that held it ({_describe(previous)}) ended without releasing it; taken over"
            )
        write_json_atomic(
            run_dir / LOCK_INFO_NAME,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv),
            },
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            (run_dir / LOCK_INFO_NAME).unlink()
        lock.release()


def check_not_locked(run_dir: Path) -> None:
    """Raise :class:`ArtifactError` when a training run holds ``run_dir``'s lock (its outputs are
    still being written); nothing happens where the lock cannot be tried (a read-only folder)."""
    from filelock import FileLock, Timeout

    if not (run_dir / LOCK_NAME).is_file() or not os.access(run_dir / LOCK_NAME, os.W_OK):
        return
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ArtifactError(
            f"{run_dir} is still being trained ({_describe(lock_holder(run_dir))}); wait for the run to finish "
            "before extracting from it."
        ) from None
    except OSError:
        return
    lock.release()


# ---------------------------------------------------------------------------------------------- configs
def _comparable(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in _RESUME_FREE_FIELDS}


def config_differences(saved: dict, now: dict) -> str:
    """``"num_tasks: checkpoint 3, now 5; lr: ..."`` for every field that differs ("" when none)."""
    saved, now = _comparable(saved), _comparable(now)
    # a field added by a later version is absent from older checkpoints: it counts as its default
    for f in fields(CollectiveTrainingConfig):
        if f.name in now and f.name not in saved and f.default is not MISSING:
            saved[f.name] = f.default
    missing = object()
    parts = []
    for key in sorted(set(saved) | set(now)):
        before, after = saved.get(key, missing), now.get(key, missing)
        if before != after:
            show = lambda v: "unset" if v is missing else repr(v)  # noqa: E731
            parts.append(f"{key}: checkpoint {show(before)}, now {show(after)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- loading
def load_run(run_dir: str | os.PathLike) -> CollectiveRun:
    """Load a run folder written by :func:`~learngene_hf.training.trainer.train_collective` (model
    in eval mode).

    A missing or corrupt file raises :class:`ArtifactError` naming it and what to run.
    """
    run_dir = Path(run_dir)
    hint = "run examples/train_collective.py (or train_collective) with this output folder to (re)create it"
    if not run_dir.is_dir():
        raise ArtifactError(f"Run folder {run_dir} does not exist; {hint}.")
    if (run_dir / "learngene_config.json").is_file() and not (run_dir / "run_config.json").exists():
        raise ArtifactError(
            f"{run_dir} is a learngene (it holds learngene_config.json), not a collective run: give the folder that "
            "examples/train_collective.py wrote (e.g. runs/collective). To use this learngene, pass it to "
            f"examples/few_shot.py --learngene {run_dir} or Learngene.from_pretrained."
        )
    check_not_locked(run_dir)
    for name in ("run_config.json", "report.json", "gradient_record.json", "model"):
        if not (run_dir / name).exists():
            raise ArtifactError(f"{run_dir / name} is missing: the run did not finish writing its outputs; {hint}.")
    try:
        run_config = read_json(run_dir / "run_config.json")
        report = read_json(run_dir / "report.json")
        record = GradientRecord.load(run_dir / "gradient_record.json")
    except ArtifactError as err:
        raise ArtifactError(f"{err} ({hint})") from err
    try:
        config = CollectiveTrainingConfig.from_dict(run_config["training"])
        split = ClassSplit.from_dict(run_config["class_split"])
    except (KeyError, TypeError, ConfigError) as err:
        raise ArtifactError(f"{run_dir / 'run_config.json'} is malformed ({err}); {hint}.") from err
    model = load_model(run_dir / "model")
    model.eval()
    return CollectiveRun(model=model, record=record, report=report, split=split, config=config, run_dir=run_dir)
