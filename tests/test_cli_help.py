"""The example scripts answer ``--help`` before any heavy import, and every flag says what it does
and what its default really is."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["train_collective", "extract_learngene", "few_shot", "run_pipeline"]
HEAVY = ("torch", "transformers", "timm", "accelerate", "datasets", "huggingface_hub", "numpy")


def _parser(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser that ``examples/<name>.py`` builds (the script is loaded, not run)."""
    monkeypatch.setenv("LEARNGENE_HF_DEFER_MODELS", "1")  # as the script sets it; undone after the test
    spec = importlib.util.spec_from_file_location(f"help_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        return original(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    module.parse_args(["data"] if name == "extract_learngene" else [])
    return captured["parser"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_is_answered_without_importing_torch(name):
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{name!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(REPO / 'examples' / (name + '.py'))!r}, run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LEARNGENE_HF_DEFER_MODELS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout and "--quiet" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_help_text(name, monkeypatch):
    parser = _parser(name, monkeypatch)
    bare = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        and (not action.help or action.help.startswith("default:") or ":mod:" in action.help)
    ]
    assert not bare, f"flags of {name}.py without help text: {bare}"


def test_defaults_shown_are_the_ones_that_apply(monkeypatch):
    helps = {
        name: {opt: action for action in _parser(name, monkeypatch)._actions for opt in action.option_strings}
        for name in SCRIPTS
    }
    assert "(default: 100, the default recipe's)" in helps["few_shot"]["--steps"].help
    lr = helps["train_collective"]["--lr"].help
    assert "AdamW" in lr and "vit-small 0.001" in lr
    strategy = helps["extract_learngene"]["--strategy"]
    named = set(re.findall(r"'(\w+)'", strategy.help)) | set(re.findall(r'"(\w+)"', strategy.help))
    assert named <= set(strategy.choices), f"--strategy help names {named - set(strategy.choices)}"


def test_accelerate_launch_cpu_with_two_processes_warns_that_one_runs(tmp_path):
    """``accelerate launch --cpu --num_processes 2`` starts one process; the scripts' accelerator
    says so and names the command that starts two (tests/test_fewshot.py runs that one)."""
    from conftest import free_port

    script = tmp_path / "one.py"
    script.write_text(
        "from learngene_hf.cli import make_accelerator, run_script\n"
        "run_script(lambda argv: print('PROCESSES', make_accelerator().num_processes))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "LEARNGENE_HF_DEFER_MODELS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", str(script)]
    done = subprocess.run(launch, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["PROCESSES", "1"]
    assert "accelerate launch --multi_gpu --num_processes N" in done.stderr
    alone = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert alone.returncode == 0 and "--num_processes" not in alone.stderr  # a plain run: no warning


def test_quiet_hides_the_stage_lines_but_not_warnings(capsys):
    from learngene_hf.cli import run_script
    from learngene_hf.logs import get_logger

    def main(argv):
        get_logger("learngene_hf.demo").info("stage line")
        get_logger("learngene_hf.demo").warning("a warning")
        print("the result")

    for argv, shown in ((["--quiet"], False), ([], True)):
        with pytest.raises(SystemExit) as done:
            run_script(main, argv)
        out, err = capsys.readouterr()
        assert done.value.code == 0 and out == "the result\n"
        assert ("stage line" in err) == shown and "a warning" in err
