"""The one-command pipeline on a tiny embedded dataset: every stage runs and writes its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learngene_hf.artifact.learngene import Learngene
from learngene_hf.errors import ConfigError
from learngene_hf.pipeline import QUICK, PipelineConfig, run_pipeline

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    preset="tiny",
    num_tasks=2,
    epochs_per_task=1,
    images_per_class=12,
    embedded={"num_classes": 10, "train_per_class": 24, "test_per_class": 10, "image_size": 16},
    k=2,
    probe_episodes=1,
    shots=[2],
    episodes=2,
    ways=2,
    queries=2,
    epochs=2,
    tune_episodes=1,
    lr_grid=[0.05],
)


def test_pipeline_runs_every_stage_and_shares_the_learngene(tmp_path, hub):
    cfg = PipelineConfig(output_dir=str(tmp_path / "out"), repo_id="me/tiny-learngene", hub_endpoint=hub, **TINY)
    summary = run_pipeline(cfg, progress=False, log=lambda *a, **k: None)
    out = tmp_path / "out"
    for path in (
        "collective/model/config.json",
        "collective/heatmap.png",
        "learngene/learngene.safetensors",
        "few_shot_2shot/results.json",
        "few_shot_2shot/accuracy.png",
        "summary.json",
        "summary.md",
    ):
        assert (out / path).is_file(), path
    # the Hub copy, pulled by commit sha, is the learngene that was saved
    hub_info = summary["hub"]
    assert hub_info["identical_after_pull"] and len(hub_info["commit_sha"]) == 40
    pulled = Learngene.from_pretrained("me/tiny-learngene", revision=hub_info["commit_sha"])
    saved = Learngene.from_pretrained(out / "learngene")
    assert all(torch.equal(pulled.tensors[n], saved.tensors[n]) for n in saved.tensors)
    # few-shot: learngene, scratch and the frozen-feature baselines on the same episodes (the other
    # fine-tuned blocks only with compare_blocks); a one-value lr grid is applied without tuning runs,
    # the baselines' L2 is still tuned on open-world episodes
    result = json.loads((out / "few_shot_2shot" / "results.json").read_text())
    methods = result["methods"]
    assert {"learngene", "scratch", "logreg_random", "logreg_collective"} <= set(methods) and "whole" not in methods
    assert methods["learngene"]["lr"] == 0.05 and methods["learngene"]["tuning"] is None
    assert methods["logreg_random"]["settings_search"]
    assert result["setting"]["episodes"] == 2 and result["setting"]["lr_tuned_on"] == "open-world classes"
    assert [row["index"] for row in result["episodes"]] == [0, 1]
    assert result["seconds_per_run"] > 0
    text = (out / "summary.md").read_text()
    assert "## 2-shot" in text and "| scratch |" in text and "Hub: pushed to `me/tiny-learngene`" in text


def test_quick_settings_run_the_whole_cycle_at_the_tiny_size(tmp_path, hub):
    """run_pipeline.py --quick: every stage at the tiny size, the summary naming the open-world score."""
    cfg = PipelineConfig(**{**QUICK, "output_dir": str(tmp_path / "quick"), "hub_endpoint": hub})
    summary = run_pipeline(cfg, progress=False, log=lambda *a, **k: None)
    assert summary["collective"]["preset"] == "tiny" and summary["few_shot"]["2"]["setting"]["episodes"] == 2
    assert summary["collective"]["open_world_method"] == "energy"
    assert 0 <= summary["collective"]["mean_open_world_auroc"] <= 1
    text = (tmp_path / "quick" / "summary.md").read_text()
    assert "open-world AUROC" in text and "energy score" in text and "model.open_world_score" in text


def test_without_compact_the_pipeline_shares_the_validated_full_width_block(tmp_path, hub):
    cfg = PipelineConfig(output_dir=str(tmp_path / "out"), repo_id="me/block", hub_endpoint=hub, compact=False, **TINY)
    summary = run_pipeline(cfg, progress=False, log=lambda *a, **k: None)
    saved = Learngene.from_pretrained(tmp_path / "out" / "learngene")
    assert summary["learngene"]["strategy"] == "validated" and len(saved.config.layers) == 2
    assert "channel_selection" not in saved.config.source and not summary["learngene"]["distilled"]
    assert (tmp_path / "out" / "learngene" / "layer_ranking.png").is_file()


def test_a_byte_budget_makes_the_pipeline_share_the_best_candidate_that_fits(tmp_path, hub):
    from learngene_hf.artifact.narrow import block_bytes

    budget = block_bytes(3, [8, 8], 3)  # the tiny preset's first two layers at full width
    cfg = PipelineConfig(output_dir=str(tmp_path / "out"), repo_id="me/budget", hub_endpoint=hub, max_bytes=budget,
                         distill_epochs=1, **TINY)  # fmt: skip
    lines = []
    summary = run_pipeline(cfg, progress=False, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    saved = Learngene.from_pretrained(tmp_path / "out" / "learngene")
    assert saved.num_bytes() <= budget and summary["learngene"]["strategy"] == "budget"
    assert any("under" in line and "bytes" in line for line in lines)
    assert any("| distilled_4 |" in line or "| distilled_4 (chosen) |" in line for line in lines)
    assert summary["hub"]["identical_after_pull"]
    with pytest.raises(ConfigError, match="distill_epochs must be 0 or more"):
        from learngene_hf.pipeline import check_before_training

        check_before_training(PipelineConfig(output_dir=str(tmp_path / "x"), distill_epochs=-1, **TINY))


def test_the_pipelines_own_hub_takes_only_its_own_token(tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from learngene_hf.testing.hub import LocalHubServer

    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = PipelineConfig(output_dir=str(tmp_path / "out"), repo_id="me/tiny-learngene", **TINY)
    summary = run_pipeline(cfg, progress=False, log=lambda *a, **k: None)
    assert summary["hub"]["identical_after_pull"] and summary["config"]["token"] is None  # the token is not kept
    repo = json.loads(
        (tmp_path / "out" / "hub" / "repos" / "models" / "me" / "tiny-learngene" / "repo.json").read_text()
    )
    assert repo["owner"] == "me"
    with LocalHubServer(tmp_path / "out" / "hub") as server:  # the same store served again: read-only
        api = HfApi(endpoint=server.endpoint, token=False)
        assert "learngene.safetensors" in api.list_repo_files("me/tiny-learngene")
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="me/tiny-learngene")
        assert err.value.response.status_code == 401


def test_pipeline_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="shots must be a non-empty list"):
        PipelineConfig(shots=[])
    with pytest.raises(ConfigError, match="episodes must be positive"):
        PipelineConfig(episodes=0)


def test_run_pipeline_example_explains_itself():
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "run_pipeline.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("--dataset", "--strategy", "--hub-endpoint", "--shots", "--tune-lr", "--compare"):
        assert flag in done.stdout
