"""Every record says what it ran on: the collective report, the few-shot results and (through
both) the pipeline summary hold the mixed precision, the device and the library versions."""

from __future__ import annotations

import json
from importlib import metadata
from types import SimpleNamespace

import torch
from helpers import EMBEDDED, SPLIT, color_data, tiny_learngene

import learngene_hf
from learngene_hf.data import load_tensors, sample_episodes
from learngene_hf.fewshot.compare import compare_methods, write_results
from learngene_hf.fewshot.config import FewShotConfig
from learngene_hf.machine import device_name, machine_record
from learngene_hf.training.config import CollectiveTrainingConfig
from learngene_hf.training.trainer import train_collective


def _check(record: dict, mixed_precision: str) -> None:
    assert record["mixed_precision"] == mixed_precision
    assert record["device"] == "cpu" and record["device_name"] == device_name("cpu") and record["processes"] == 1
    versions = record["versions"]
    assert versions["learngene-hf"] == learngene_hf.__version__ == metadata.version("learngene-hf")
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    for name in ("transformers", "timm", "accelerate"):
        assert versions[name] == metadata.version(name)


def test_collective_report_records_precision_device_and_versions(tmp_path):
    config = CollectiveTrainingConfig.for_preset(
        "tiny", num_tasks=1, ways=3, epochs_per_task=1, train_per_class=10, test_per_class=5, base=[0, 1, 2], novel=[]
    )
    train_collective(config, tmp_path / "run", data=color_data(n_classes=4), progress=False)
    _check(json.loads((tmp_path / "run" / "report.json").read_text())["machine"], "no")


def test_few_shot_results_record_precision_device_and_versions(tmp_path):
    data, _ = load_tensors(None, **EMBEDDED)
    episodes = sample_episodes(data, SPLIT["novel"], 1, ways=2, shots=1, queries=2)
    results = compare_methods(tiny_learngene(), episodes, FewShotConfig(steps=1, device="cpu"), progress=False)
    written = json.loads(open(write_results(results, tmp_path / "out", plot=False)["results"]).read())
    _check(written["machine"], "no")
    assert device_name("cpu").endswith("cores)")  # the CPU model and the cores this process may use


def test_machine_record_reads_an_accelerator():
    accelerator = SimpleNamespace(device=torch.device("cpu"), mixed_precision="bf16", num_processes=2)
    record = machine_record(accelerator)
    assert (record["mixed_precision"], record["device"], record["processes"]) == ("bf16", "cpu", 2)
