"""The whole learngene pipeline in one call: collective model -> learngene -> Hub -> few-shot.

:func:`run_pipeline` chains the library's stages exactly as a user would run the examples one by
one, and writes everything under one output folder::

    OUTPUT_DIR/
      collective/            train_collective: model, gradient record, heat map, report
      learngene/             the selected learngene (learngene.safetensors, config, model card,
                             layer_ranking.png)
      hub/                   the local Hub server's storage (when no endpoint is given)
      hub_cache/             the Hub cache of the learngene pulled back by commit sha
      few_shot_{K}shot/      results.json, results.md, accuracy.png for every K in ``shots``
      summary.json           the numbers of every stage
      summary.md             the tables, also printed at the end

Every stage is resumable: the collective run continues from its checkpoint, and a rerun of the
same command redoes only the (quick) later stages.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import ConfigError
from .fewshot.config import DEFAULT_SIZE, RECIPES, SIZE_RECIPES, ComparisonConfig, FewShotConfig, sized_recipe
from .selection.config import SelectionConfig
from .summary import summary_markdown, without_episodes

# torch, accelerate and the library's heavy modules are imported where they are used, so that the
# example script builds its --help from PipelineConfig without them

DEFAULT_REPO_ID = "demo/learngene-embedded"

#: ``run_pipeline.py --quick``: the whole cycle at a toy size, in well under a minute on a CPU. It
#: shows every stage and the API, not what a learngene is worth (its accuracies mean nothing).
QUICK: dict[str, Any] = {
    "preset": "tiny", "num_tasks": 2, "images_per_class": 20, "embedded": {"num_classes": 40, "image_size": 16},
    "probe_episodes": 1, "size": "small", "shots": [2], "episodes": 2, "ways": 3, "steps": 10, "tune_episodes": 1,
    "output_dir": "runs/quick",
}  # fmt: skip


@dataclass
class PipelineConfig:
    """Settings of :func:`run_pipeline` (the defaults took 230 s on an idle 2-core development machine).

    The few-shot and selection defaults are those of :class:`~learngene_hf.fewshot.config.ComparisonConfig`,
    :class:`~learngene_hf.fewshot.config.FewShotConfig` and :class:`~learngene_hf.selection.config.SelectionConfig`,
    except where the pipeline deliberately differs: 5 shots only, tuning and ``--compare`` on (the
    frozen-feature baselines), the other fine-tuned blocks off (``compare_blocks``), and no lr grid
    (the recipe's lr, picked on open-world classes by ``benchmarks/pipeline_benchmark.py``).

    Attributes:
        output_dir: where every stage writes.
        seed: seed of the training stream, the probes and the episodes.
        preset: model size and training defaults of the collective model (tiny, small, paper).
        dataset: a datasets source (Hub id, folder, parquet); None: the embedded procedural dataset.
        image_column: image column of the dataset (None: its Image feature).
        label_column: label column of the dataset (None: its ClassLabel feature).
        image_size: resize images to this side.
        num_tasks: tasks in the stream (None: the preset's).
        epochs_per_task: epochs per task (None: the preset's).
        images_per_class: training images per class and task (None: the preset's).
        embedded: arguments of the embedded dataset, e.g. {"num_classes": 20}.
        strategy: learngene selection: validated, criterion or paper.
        criterion: ranking criterion: paper, relative_activity, stability or weight_change.
        k: layers in the learngene.
        layers: explicit layers, e.g. 0-2 (overrides the strategy).
        probe_episodes: open-world episodes per candidate of the validated selection.
        compact: choose the learngene under a budget of inherited bytes (max_bytes) among the
            first d layers of every depth at the widest width that fits, the deepest one also
            distilled from the collective model, by linear probes on the open-world classes
            (learngene_hf.selection.compact); False (--no-compact): the validated block of k
            full-width layers. Explicit layers or another strategy turn it off.
        max_bytes: the budget of the compact learngene (None: the bytes of the collective
            model's first k conv layers at full width).
        distill_epochs: epochs of the deepest candidate's distillation, on the base classes
            (0: no distilled candidate).
        repo_id: Hub repo the learngene is pushed to.
        hub_endpoint: Hub URL (None: a local Hub server storing under OUTPUT_DIR/hub;
            https://huggingface.co for the real one).
        token: Hub token.
        size: the descendant size of the few-shot stage and of the validated selection's probes
            ("tiny": the learngene and a linear head, "small", "medium", "full"); its recipe under
            the fields below. None: the learngene's default (tiny for the compact learngene, which
            holds every layer; small for a block of layers).
        shots: one few-shot comparison per value.
        episodes: novel-class episodes per comparison.
        ways: classes per episode.
        queries: query images per class.
        recipe: few-shot training recipe, default or paper (FewShotConfig.from_recipe); the
            four fields below, when set, change single values of it.
        steps: few-shot optimisation steps (None: the recipe's).
        epochs: count passes over the support set instead of steps (None: the recipe's).
        lr: few-shot peak learning rate when tuning is off (None: the recipe's).
        batch_size: few-shot batch size (None: the recipe's).
        tune_lr: pick every method's recipe values on open-world episodes: the lr, and the
            steps when steps_grid is given.
        tune_episodes: open-world episodes per grid point when tuning.
        lr_grid: learning rates tried when tuning; None (the default): the recipe's lr for every
            fine-tuned method, without tuning runs (the baselines' settings are still tuned).
            The default recipe's lr was picked on open-world classes by the pipeline benchmark.
        steps_grid: optimisation steps tried when tuning (None: not tuned).
        compare: also the frozen-feature baselines (logistic regression and nearest centroid on the
            features of a random network, of the learngene and of the collective model) and,
            with compare_blocks, the methods that fine-tune other inherited networks.
        compare_blocks: with compare, also fine-tune the whole backbone, the last-k, first-k and
            worst-k blocks and weight selection (each costs as much as the learngene's row).
        stack: train many few-shot descendants at once (learngene_hf.fewshot.stacked) in the selection
            probes, the tuning and the comparison; False (--no-stack): one at a time.
        stack_size: at most this many descendants per stack (more fill a GPU better).
    """

    output_dir: str = "runs/pipeline"
    seed: int = 0
    # collective
    preset: str = "small"
    dataset: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    image_size: int | None = None
    num_tasks: int | None = None
    epochs_per_task: int | None = None
    images_per_class: int | None = None
    embedded: dict[str, Any] = field(default_factory=dict)
    # learngene
    strategy: str = SelectionConfig.strategy
    criterion: str | None = None
    k: int = SelectionConfig.k
    layers: list[int] | None = None
    probe_episodes: int = SelectionConfig.probe_episodes
    compact: bool = True
    max_bytes: int | None = None
    distill_epochs: int = 3
    # hub
    repo_id: str = DEFAULT_REPO_ID
    hub_endpoint: str | None = None
    token: str | None = None
    # few-shot
    size: str | None = field(default=None, metadata={"choices": tuple(SIZE_RECIPES)})
    shots: list[int] = field(default_factory=lambda: [5])
    episodes: int = ComparisonConfig.episodes
    ways: int = ComparisonConfig.ways
    queries: int = ComparisonConfig.queries
    recipe: str = field(default="default", metadata={"choices": RECIPES})
    steps: int | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    tune_lr: bool = True
    tune_episodes: int = ComparisonConfig.tune_episodes
    lr_grid: list[float] | None = None
    steps_grid: list[int] | None = None
    compare: bool = True
    compare_blocks: bool = False
    stack: bool = FewShotConfig.stack
    stack_size: int = FewShotConfig.stack_size

    def __post_init__(self) -> None:
        if not self.shots or any(int(s) <= 0 for s in self.shots):
            raise ConfigError(f"shots must be a non-empty list of positive integers, got {self.shots!r}.")
        for name in ("episodes", "ways", "queries", "k", "probe_episodes", "tune_episodes"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}.")
        for name in ("steps", "epochs", "batch_size"):
            if getattr(self, name) is not None and int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive (or None for the recipe's), got {getattr(self, name)!r}.")
        self.fewshot_config()  # a bad recipe fails here, not after collective training

    def fewshot_config(self, device: str | None = None, size: str | None = None) -> Any:
        """The :class:`~learngene_hf.fewshot.config.FewShotConfig` of the few-shot stage: ``recipe``
        (the default one with the values of the descendant ``size``, default ``self.size`` or
        :data:`DEFAULT_SIZE`) with the fields set here (``steps``, ``epochs``, ``lr``, ``batch_size``) on top."""
        given = {"steps": self.steps, "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size}
        fields = {k: v for k, v in given.items() if v is not None}
        fields.update(device=device, stack=self.stack, stack_size=self.stack_size)
        return sized_recipe(size or self.size or DEFAULT_SIZE, self.recipe, **fields)

    def tune_grid(self) -> dict[str, list[float]]:
        """What the few-shot stage tunes per method on open-world episodes."""
        lrs = self.lr_grid if self.lr_grid else [self.fewshot_config().lr]
        grid: dict[str, list[float]] = {"lr": [float(x) for x in lrs]}
        if self.steps_grid:
            grid["steps"] = [int(x) for x in self.steps_grid]
        return grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_config(cfg: PipelineConfig) -> Any:
    """The :class:`~learngene_hf.training.config.CollectiveTrainingConfig` of the pipeline's first stage."""
    from .training.config import CollectiveTrainingConfig

    same = ("dataset", "image_column", "label_column", "image_size", "num_tasks", "epochs_per_task", "seed")
    return CollectiveTrainingConfig.for_preset(
        cfg.preset,
        train_per_class=cfg.images_per_class,
        embedded=dict(cfg.embedded),
        **{k: getattr(cfg, k) for k in same},
    )


def _train(cfg: PipelineConfig, out: Path, accelerator, progress: bool):
    from .training.trainer import train_collective

    config = training_config(cfg)
    return train_collective(config, out / "collective", accelerator=accelerator, resume=True, progress=progress)


# ---------------------------------------------------------------------- the checks before stage 1
def check_before_training(cfg: PipelineConfig) -> None:
    """Refuse, in one line and before stage 1, what would make a later stage fail: an output folder
    that cannot be written, training or selection settings out of range, more ways or shots than
    the class split and the images allow (known before loading for the embedded and built-in
    datasets), a repo id the Hub refuses, and a ``hub_endpoint`` that is not a URL, does not
    answer or refuses the token."""
    from .io import writable_folder
    from .selection.config import DEFAULT_CRITERION

    writable_folder(cfg.output_dir, "the output folder (--output-dir)")
    training = training_config(cfg)
    training.validate()
    SelectionConfig(
        strategy=cfg.strategy if cfg.layers is None else "layers",
        k=cfg.k,
        criterion=cfg.criterion or DEFAULT_CRITERION,
        layers=cfg.layers,
        probe_episodes=cfg.probe_episodes,
    )
    if cfg.max_bytes is not None and cfg.max_bytes < 1:
        raise ConfigError(f"max_bytes must be a positive number of bytes (--max-bytes), got {cfg.max_bytes!r}.")
    if cfg.distill_epochs < 0:
        raise ConfigError(f"distill_epochs must be 0 or more (--distill-epochs), got {cfg.distill_epochs!r}.")
    _check_classes(cfg, training)
    _check_hub(cfg)


def _check_classes(cfg: PipelineConfig, training: Any) -> None:
    from .data import builtin_split, split_classes
    from .training.loading import class_arg

    per_class = None
    if training.dataset is None:
        embedded = dict(training.embedded)
        per_class = int(embedded.get("train_per_class", training.train_per_class or 600))
        split = split_classes(
            int(embedded.get("num_classes", 100)),
            seed=training.split_seed,
            base=class_arg(training.base),
            open_world=class_arg(training.open_world),
            novel=class_arg(training.novel),
        )
    elif builtin_split(training.dataset) is not None:
        split = builtin_split(training.dataset)
    else:
        return  # a named dataset: its classes are known once stage 1 has loaded it
    if cfg.ways > len(split.novel):
        raise ConfigError(
            f"ways={cfg.ways} (--ways) is more than the {len(split.novel)} novel classes of the split "
            f"({list(split.novel)}); use --ways {len(split.novel)} or fewer, or a dataset with more classes."
        )
    needs_open_world = cfg.tune_lr or (cfg.strategy == "validated" and cfg.layers is None)
    if needs_open_world and len(split.open_world) < 2:
        raise ConfigError(
            f"the split has {len(split.open_world)} open-world classes ({list(split.open_world)}); tuning (--tune-lr) "
            "and the validated selection need at least 2: use more classes, or --no-tune-lr and --strategy criterion."
        )
    if per_class is not None and max(cfg.shots) + cfg.queries > per_class:
        raise ConfigError(
            f"{max(cfg.shots)} shots + {cfg.queries} queries per class (--shots, --queries) need more than the "
            f"{per_class} images per class of the dataset; lower them or raise --images-per-class."
        )


def _check_hub(cfg: PipelineConfig) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(cfg.repo_id)
    except HFValidationError as err:
        raise ConfigError(f"repo_id {cfg.repo_id!r} (--repo-id) is not a Hub repo id ({err}).") from None
    if cfg.repo_id.count("/") != 1:
        raise ConfigError(f"repo_id {cfg.repo_id!r} (--repo-id) needs a namespace: write it as 'namespace/name'.")
    if not cfg.hub_endpoint:
        return  # the pipeline's own local Hub
    if not cfg.hub_endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"hub_endpoint {cfg.hub_endpoint!r} (--hub-endpoint) is not a URL like http://127.0.0.1:8080."
        )
    from .artifact.save_and_load import does_not_answer

    api = HfApi(endpoint=cfg.hub_endpoint, token=cfg.token)
    try:
        api.repo_exists(cfg.repo_id)
    except Exception as err:  # noqa: BLE001 - said in one line
        if does_not_answer(err):
            raise ConfigError(
                f"The Hub at {cfg.hub_endpoint} (--hub-endpoint) does not answer ({type(err).__name__}: {err}); start "
                "it or correct the URL before training."
            ) from err
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            raise ConfigError(
                f"The Hub at {cfg.hub_endpoint} refuses the token (HTTP 401); pass a token it knows (--token, "
                "HF_TOKEN)."
            ) from err


def uses_budget(cfg: PipelineConfig) -> bool:
    """Whether the pipeline chooses a compact learngene under a byte budget (see ``compact``)."""
    return cfg.compact and cfg.layers is None and cfg.strategy == SelectionConfig.strategy


def _select_and_save(cfg: PipelineConfig, out: Path, device: str) -> tuple[Any, list[str]]:
    """Select, extract and save the learngene; returns it and the lines that report the choice."""
    from .artifact.learngene import Learngene
    from .fewshot.runner import learngene_probe
    from .selection.compact import budget_table
    from .selection.config import DEFAULT_CRITERION
    from .selection.inheritor import Inheritor

    probes = {"probe_lrs": (float(cfg.fewshot_config().lr),), "probe_episodes": cfg.probe_episodes, "seed": cfg.seed}
    if uses_budget(cfg):
        # linear probes: fine-tuned probes at one learning rate ranked these candidates unlike the novel classes
        inheritor = Inheritor.from_run(out / "collective", probe=partial(learngene_probe, stack=cfg.stack, size="tiny"))
        model = inheritor.model
        budget = cfg.max_bytes or Learngene.from_collective(model, list(range(cfg.k))).num_bytes()
        deepest = [int(model.config.num_layers)] if cfg.distill_epochs else []
        result = inheritor.select_under_budget(budget, distill_epochs=cfg.distill_epochs, distill_depths=deepest,
                                               probe_training="a linear probe (the tiny descendant)", device=device,
                                               **probes)  # fmt: skip
        widths = inheritor.learngene.config.widths
        lines = [budget_table(result), f"chosen: {result['chosen']} (widths {widths}) - {result['reason']}"]
    else:
        # the probes train the descendant the few-shot stage will train: its size, its recipe, its lr
        inheritor = Inheritor.from_run(
            out / "collective", probe=partial(learngene_probe, stack=cfg.stack, size=cfg.size or DEFAULT_SIZE)
        )
        selection = inheritor.select(
            cfg.strategy, k=cfg.k, criterion=cfg.criterion or DEFAULT_CRITERION, layers=cfg.layers, device=device,
            **probes,
        )  # fmt: skip
        lines = [selection.table(), f"chosen: {selection.chosen_names} - {selection.reason}"]
    inheritor.save_pretrained(out / "learngene", repo_id=cfg.repo_id)
    return inheritor.learngene, lines


def _share(
    cfg: PipelineConfig, out: Path, learngene, endpoint: str | None, token: str | None
) -> tuple[Any, dict[str, Any]]:
    """Push the learngene to the Hub at ``endpoint`` with ``token`` and pull it back by commit sha;
    returns the pulled copy."""
    import torch
    from huggingface_hub import HfApi

    from .artifact.learngene import Learngene

    start = time.perf_counter()
    commit = learngene.push_to_hub(
        cfg.repo_id, token=token, commit_message="Learngene from learngene-hf's pipeline", endpoint=endpoint
    )
    push_s = time.perf_counter() - start
    sha = commit.oid
    start = time.perf_counter()
    pulled = Learngene.from_pretrained(
        cfg.repo_id, revision=sha, token=token, cache_dir=str(out / "hub_cache"), endpoint=endpoint
    )
    pull_s = time.perf_counter() - start
    same = set(pulled.tensors) == set(learngene.tensors) and all(
        torch.equal(pulled.tensors[name], tensor) for name, tensor in learngene.tensors.items()
    )
    if not same:
        raise RuntimeError("The learngene pulled from the Hub differs from the one pushed; the Hub copy is corrupt.")
    api = HfApi(endpoint=endpoint)
    files = api.list_repo_tree(cfg.repo_id, revision=sha, token=token)
    pulled_bytes = sum(getattr(f, "size", 0) or 0 for f in files)
    return pulled, {
        "repo_id": cfg.repo_id,
        "commit_sha": sha,
        "endpoint": api.endpoint,
        "push_seconds": push_s,
        "pull_seconds": pull_s,
        "repo_bytes": pulled_bytes,
        "identical_after_pull": same,
    }


@contextmanager
def _hub_endpoint(cfg: PipelineConfig, out: Path) -> Iterator[tuple[str, str | None]]:
    """``(endpoint, token)`` of the Hub the pipeline shares through: ``cfg.hub_endpoint`` and
    ``cfg.token``, or a local Hub server storing under ``OUTPUT_DIR/hub`` (its code is imported only
    then) for the duration of the block, with a fresh token of its own that writes only to the
    namespace of ``cfg.repo_id``."""
    if cfg.hub_endpoint:
        yield cfg.hub_endpoint, cfg.token
        return
    import secrets

    from .testing.hub import local_hub

    token = f"hf_pipeline_{secrets.token_urlsafe(24)}"
    with local_hub(out / "hub", tokens={token: cfg.repo_id.split("/")[0]}) as endpoint:
        yield endpoint, token


def _few_shot(cfg: PipelineConfig, out: Path, learngene, accelerator, progress: bool) -> dict[int, dict[str, Any]]:
    from .data import sample_episodes
    from .fewshot.compare import compare_methods, write_results
    from .fewshot.config import default_size
    from .fewshot.loading import load_fewshot_data
    from .fewshot.methods import comparison_methods
    from .fewshot.tuning import tuning_episodes

    data, novel, open_world = load_fewshot_data(learngene)
    size = cfg.size or default_size(learngene)
    methods = comparison_methods(
        learngene, compare=cfg.compare, blocks=cfg.compare_blocks, collective_run=str(out / "collective"), size=size
    )
    fs_cfg = cfg.fewshot_config(device=str(accelerator.device), size=size)
    results = {}
    for shots in cfg.shots:
        episodes = sample_episodes(data, novel, cfg.episodes, cfg.ways, shots, cfg.queries, seed=cfg.seed)
        tune = None
        if cfg.tune_lr:
            tune = tuning_episodes(data, open_world, cfg.tune_episodes, cfg.ways, shots, cfg.queries, seed=cfg.seed)
        start = time.perf_counter()
        result = compare_methods(
            learngene,
            episodes,
            fs_cfg,
            methods=methods,
            tune_lr_episodes=tune,
            tune_grid=cfg.tune_grid(),
            accelerator=accelerator,
            seed=cfg.seed,
            progress=progress,
        )
        elapsed = time.perf_counter() - start
        tried = sum(len((m.get("tuning") or {}).get("means") or []) for m in result["methods"].values())
        runs = len(result["methods"]) * len(episodes) + tried * len(tune or [])
        result["setting"]["processes"] = accelerator.num_processes
        result["seconds"] = elapsed
        result["seconds_per_run"] = elapsed * accelerator.num_processes / runs  # one model trained + evaluated
        if accelerator.is_main_process:
            write_results(result, str(out / f"few_shot_{shots}shot"))
        results[shots] = result
    return results


def run_pipeline(
    cfg: PipelineConfig | None = None, *, accelerator=None, progress: bool = True, log=None
) -> dict[str, Any]:
    """Run collective training, learngene selection and extraction, the Hub round trip and the
    few-shot comparison; returns the summary (also written to ``summary.json`` / ``summary.md``).

    The stage lines, the selection table and the final summary go to ``log`` (default: this
    module's logger at INFO level, through ``accelerate.logging``; the example script shows them).

    Under ``accelerate launch`` with several processes, training and the few-shot episodes are
    spread over the processes; selection, saving and the Hub round trip run on the main process.
    """
    from accelerate import Accelerator

    from .artifact.learngene import Learngene
    from .io import write_json_atomic, write_text_atomic
    from .logs import get_logger
    from .machine import machine_record
    from .training.config import resolve_mixed_precision

    cfg = cfg or PipelineConfig()
    check_before_training(cfg)  # every stage's options, before stage 1
    out = Path(cfg.output_dir)
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=resolve_mixed_precision("auto"))
    main = accelerator.is_main_process
    say = (log or get_logger(__name__).info) if main else (lambda *a, **k: None)
    timings: dict[str, float] = {}

    say(f"[1/4] Training the collective model ({cfg.preset} preset) -> {out / 'collective'}")
    start = time.perf_counter()
    run = _train(cfg, out, accelerator, progress)
    timings["collective"] = time.perf_counter() - start

    hub_info: dict[str, Any] | None = None
    with _hub_endpoint(cfg, out) if main else nullcontext((None, None)) as (endpoint, token):
        if main:
            how = "compact, under a byte budget" if uses_budget(cfg) else f"strategy {cfg.strategy!r}"
            say(f"[2/4] Selecting the learngene ({how}) -> {out / 'learngene'}")
            start = time.perf_counter()
            learngene, lines = _select_and_save(cfg, out, str(accelerator.device))
            timings["selection"] = time.perf_counter() - start
            for line in lines:
                say(line)
            say(f"[3/4] Sharing it on the Hub as {cfg.repo_id!r} and pulling it back")
            learngene, hub_info = _share(cfg, out, learngene, endpoint, token)
        accelerator.wait_for_everyone()
    if not main:
        learngene = Learngene.from_pretrained(out / "learngene")

    say(f"[4/4] Few-shot: learngene vs scratch on {cfg.episodes} novel-class episodes per setting")
    start = time.perf_counter()
    results = _few_shot(cfg, out, learngene, accelerator, progress)
    timings["few_shot"] = time.perf_counter() - start

    report = run.report
    lg_cfg = learngene.config
    summary = {
        "config": cfg.to_dict(),
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "machine": machine_record(accelerator),
        "collective": {
            "preset": cfg.preset,
            "num_tasks": report.get("finished_tasks"),
            "mean_accuracy_after": report.get("mean_accuracy_after"),
            "mean_accuracy_end": report.get("mean_accuracy_end"),
            "images_per_second": report.get("images_per_second"),
            "mean_forgetting": report.get("mean_forgetting"),
            "open_world_method": report.get("open_world_method"),
            "mean_open_world_auroc": report.get("mean_open_world_auroc"),
            "mean_open_world_aurocs": report.get("mean_open_world_aurocs"),
            "seconds": timings["collective"],  # this run's stage (short when it resumed a finished run)
            "training_seconds": sum(float(t.get("train_seconds") or 0.0) for t in report.get("tasks") or []),
            "run_dir": str(out / "collective"),
        },
        "learngene": {
            "layers": lg_cfg.layer_names,
            "widths": lg_cfg.widths,
            "distilled": "distillation" in (lg_cfg.source or {}),
            "position": lg_cfg.position,
            "strategy": (lg_cfg.selection or {}).get("strategy"),
            "reason": (lg_cfg.selection or {}).get("reason"),
            "sizes": dict(lg_cfg.sizes),
            "dir": str(out / "learngene"),
        },
        "hub": hub_info,
        "few_shot": {str(k): v for k, v in results.items()},
        "seconds": timings,
    }
    if main:
        write_json_atomic(out / "summary.json", without_episodes(summary))
        text = summary_markdown(summary)
        write_text_atomic(out / "summary.md", text)
        say("")
        say(text)
    accelerator.wait_for_everyone()
    return summary


def parse_int_list(text: str | Sequence[int]) -> list[int]:
    """``"5,10,20"`` -> ``[5, 10, 20]``."""
    if not isinstance(text, str):
        return [int(x) for x in text]
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ConfigError(f"Expected comma-separated integers like '5,10', got {text!r}.") from err
