"""The example scripts' command lines: flags derived from the config dataclasses, one-line errors."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from learngene_hf.cli import ArgumentParser, add_config_arguments, config_kwargs, run_script
from learngene_hf.errors import ConfigError
from learngene_hf.fewshot.config import ComparisonConfig, FewShotConfig, descendant_recipe
from learngene_hf.pipeline import PipelineConfig
from learngene_hf.selection.config import SelectionConfig
from learngene_hf.training.config import CollectiveTrainingConfig

REPO = Path(__file__).resolve().parents[1]


def example(name: str):
    """The module of ``examples/<name>.py`` (not run as a script)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option_strings(module) -> set[str]:
    import argparse

    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        return original(self, args, namespace)

    argparse.ArgumentParser.parse_args = capture
    try:
        module.parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return {opt for action in captured["parser"]._actions for opt in action.option_strings}


@pytest.mark.parametrize(
    "script, configs, exclude",
    [
        ("few_shot", [ComparisonConfig, FewShotConfig], {"device"}),
        ("train_collective", [CollectiveTrainingConfig], set()),
        ("run_pipeline", [PipelineConfig], set()),
        ("extract_learngene", [SelectionConfig], set()),
    ],
)
def test_every_config_field_is_a_flag_of_its_script(script, configs, exclude):
    flags = option_strings(example(script))
    for cls in configs:
        for f in dataclasses.fields(cls):
            if f.name not in exclude:
                assert "--" + f.name.replace("_", "-") in flags, (script, f.name)


def test_flags_not_given_leave_the_library_defaults_in_charge():
    few_shot = example("few_shot")
    args = few_shot.parse_args([])
    assert ComparisonConfig(**config_kwargs(args, ComparisonConfig)) == ComparisonConfig()
    assert FewShotConfig(**config_kwargs(args, FewShotConfig)) == FewShotConfig()
    args = example("run_pipeline").parse_args([])
    assert PipelineConfig(**config_kwargs(args, PipelineConfig)) == PipelineConfig()
    args = example("extract_learngene").parse_args([])
    assert SelectionConfig(**config_kwargs(args, SelectionConfig)) == SelectionConfig()
    args = example("train_collective").parse_args([])
    values = config_kwargs(args, CollectiveTrainingConfig)
    assert CollectiveTrainingConfig.for_preset(values.pop("preset"), **values) == CollectiveTrainingConfig.for_preset(
        "small"
    )


def test_pipeline_and_few_shot_script_share_their_few_shot_defaults():
    pipeline, comparison, schedule, selection = PipelineConfig(), ComparisonConfig(), FewShotConfig(), SelectionConfig()
    for name in ("episodes", "ways", "queries", "tune_episodes"):
        assert getattr(pipeline, name) == getattr(comparison, name), name
    assert pipeline.fewshot_config() == schedule.replace(**descendant_recipe(comparison.size))  # the size's recipe
    assert pipeline.size == comparison.size
    for name in ("k", "probe_episodes", "strategy"):
        assert getattr(pipeline, name) == getattr(selection, name), name


def test_given_flags_and_their_old_names_reach_the_configs():
    few_shot = example("few_shot")
    args = few_shot.parse_args(
        [
            "--tune-episodes",
            "7",
            "--lr-grid",
            "0.1,0.2",
            "--keep-bn-stats",
            "--no-augment",
            "--epochs",
            "3",
            "--ways",
            "4",
            "--tune-lr",
        ]
    )
    run = ComparisonConfig(**config_kwargs(args, ComparisonConfig))
    cfg = FewShotConfig(**config_kwargs(args, FewShotConfig))
    assert (run.tune_episodes, run.lr_grid, run.ways, run.tune_lr) == (7, (0.1, 0.2), 4, True)
    assert (cfg.bn_reestimate, cfg.augment, cfg.epochs) == (False, False, 3)
    train = example("train_collective")
    args = train.parse_args(
        [
            "--preset",
            "tiny",
            "--images-per-class",
            "7",
            "--base-classes",
            "0-5",
            "--growth",
            "none",
            "--thresholds",
            "1e-6,1e-4",
            "--heatmap-threshold",
            "1e-6",
            "--embedded",
            '{"num_classes": 12}',
        ]
    )
    values = config_kwargs(args, CollectiveTrainingConfig)
    config = CollectiveTrainingConfig.for_preset(values.pop("preset"), **values)
    assert (config.train_per_class, config.base, config.growth, config.thresholds) == (
        7,
        [0, 1, 2, 3, 4, 5],
        "none",
        [1e-6, 1e-4],
    )
    assert config.embedded == {"num_classes": 12} and config.epochs_per_task == 1  # the tiny preset's


def test_a_field_added_to_a_config_becomes_a_flag():
    @dataclasses.dataclass
    class Options:
        """Attributes:
        replay: images kept per past class.
        weight: penalty weight.
        """

        replay: int = 0
        weight: float | None = None
        normalize: bool = True
        grid: tuple[float, ...] = (0.1,)
        extra: dict = dataclasses.field(default_factory=dict)

    parser = ArgumentParser(prog="x")
    add_config_arguments(parser, Options)
    assert "images kept per past class (default: 0)" in " ".join(parser.format_help().split())
    args = parser.parse_args(
        ["--replay", "20", "--weight", "0.5", "--no-normalize", "--grid", "1,2", "--extra", '{"a": 1}']
    )
    assert Options(**config_kwargs(args, Options)) == Options(20, 0.5, False, [1.0, 2.0], {"a": 1})
    assert config_kwargs(parser.parse_args([]), Options) == {}


@pytest.mark.parametrize(
    "script, argv, flag, example_value",
    [
        ("few_shot", ["--lr-grid", "0.1,abc"], "--lr-grid", "0.01,0.02,0.05"),
        ("few_shot", ["--episodes", "many"], "--episodes", "such as 5"),
        ("train_collective", ["--growth", "double"], "--growth", '"op": "deepen"'),
        ("train_collective", ["--base-classes", "0-x"], "--base-classes", "0-5,8"),
        ("run_pipeline", ["--shots", "five"], "--shots", "5,10"),
    ],
)
def test_bad_flag_values_name_the_flag_and_show_a_valid_one(script, argv, flag, example_value, capsys):
    with pytest.raises(SystemExit) as info:
        example(script).parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert flag in err and example_value in err


def test_run_script_turns_project_errors_into_one_line_and_exit_code_2(capsys):
    def main(argv):
        raise ConfigError("ways must be at least 2,\ngot 1.")

    with pytest.raises(SystemExit) as info:
        run_script(main, [])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: ways must be at least 2, got 1.\n"
    with pytest.raises(ConfigError):
        run_script(main, ["--debug"])
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_script(lambda argv: 1 / 0, [])
