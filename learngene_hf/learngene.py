"""The learngene artifact: what a descendant inherits from a collective model, and how.

Two forms share one format (``learngene_config.json`` + ``learngene.safetensors``):

* ``"form": "layers"`` (the default; files without the field are layers): a few conv blocks of a
  VGG-BN collective model, copied as they are into an individual model.
* ``"form": "linear_expansion"`` (TLEG): two tensors per transformer-block parameter, ``base.<p>``
  and ``inc.<p>``, plus the patch embedding, class token, position embedding and final norm
  (``embed.<name>``); block ``l`` of an ``L``-block descendant starts at ``base + c(l, L) * inc``.
  ``config.expansion`` records the rule, the architecture and the shapes.

A :class:`Learngene` is to a collective model what a PEFT adapter is to its base model: a tiny
artifact (``learngene_config.json`` + ``learngene.safetensors``) that names where it came from and
the channel contract a descendant must satisfy, and that is validated when loaded.

Layer tensor names are stable and independent of where the block sat in the collective model:
``blocks.{j}.conv.weight``, ``blocks.{j}.bn.weight``, ``blocks.{j}.bn.bias``,
``blocks.{j}.bn.running_mean``, ``blocks.{j}.bn.running_var``, ``blocks.{j}.bn.num_batches_tracked``
for ``j = 0 .. len(config.layers) - 1``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .collective import CollectiveModel
from .individual import learngene_origin
from .errors import ArtifactError, ConfigError, HubError
from .io import follow_umask
from .layers import BLOCK_TENSOR_NAMES
from .vit import (
    BLOCK_PARAMETER_NAMES,
    EMBEDDING_TENSOR_NAMES,
    EXPANSION_RULES,
    block_tensor_shapes,
    embedding_tensor_shapes,
    mlp_hidden,
)

FORMAT_NAME = "learngene-hf"
FORMAT_VERSION = 1
CONFIG_NAME = "learngene_config.json"
WEIGHTS_NAME = "learngene.safetensors"
CARD_NAME = "README.md"
POSITIONS = ("input", "middle", "output", "whole")
FORMS = ("layers", "linear_expansion")
#: Keys of ``LearngeneConfig.expansion`` (linear-expansion learngenes).
EXPANSION_KEYS = ("rule", "depth", "embed_dim", "num_heads", "mlp_ratio", "patch_size", "image_size", "in_channels", "shapes")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class LearngeneConfig:
    """Everything about a learngene except its tensors (stored as ``learngene_config.json``).

    Attributes:
        layers: the inherited conv layers in order, each a dict with ``name`` (stable name in the
            collective model), ``source_index``, ``in_channels``, ``out_channels``,
            ``kernel_size`` and ``pool`` (whether a 2x2 max pool follows it).
        in_channels / out_channels: the channel contract: a descendant must feed the first block
            ``in_channels`` channels and read ``out_channels`` from the last.
        position: ``"input"`` (the block starts at the image), ``"output"`` (it ends at the last
            conv layer), ``"middle"``, or ``"whole"`` (all conv layers).
        input_stride: spatial downsampling (product of pools) in front of the block in the source.
        source: the collective model it came from (``repo_id``, ``revision``, ``commit_sha``,
            ``model_type``, ``preset``, ``widths``, ``pool``, ``layer_names``).
        selection: how the layers were chosen (strategy, criterion, threshold, scores, probes,
            reason), written by the :class:`~learngene_hf.inheritor.Inheritor`.
        task_stream: what the collective model learnt (dataset, classes, number of tasks, ways).
        sizes: parameter counts and bytes of the learngene and of the collective model.
        preprocessing: image size, mean and std the collective model was trained with.
        form: ``"layers"`` or ``"linear_expansion"`` (see the module docstring).
        expansion: for ``"linear_expansion"``: ``rule`` (a :data:`~learngene_hf.vit.EXPANSION_RULES`
            name), the source architecture (``depth``, ``embed_dim``, ``num_heads``, ``mlp_ratio``,
            ``patch_size``, ``image_size``, ``in_channels``) and ``shapes`` ({tensor name: shape}).
    """

    layers: list[dict[str, Any]]
    in_channels: int
    out_channels: int
    position: str
    input_stride: int = 1
    family: str = "vgg-bn"
    source: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    task_stream: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    form: str = "layers"
    expansion: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def widths(self) -> list[int]:
        """Output channels of every inherited layer."""
        return [int(layer["out_channels"]) for layer in self.layers]

    @property
    def layer_names(self) -> list[str]:
        return [str(layer["name"]) for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LearngeneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def expected_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The name and shape of every tensor the safetensors file must hold."""
        if self.form == "linear_expansion":
            return linear_expansion_shapes(self.expansion)
        shapes: dict[str, tuple[int, ...]] = {}
        for j, layer in enumerate(self.layers):
            cin, cout, k = int(layer["in_channels"]), int(layer["out_channels"]), int(layer["kernel_size"])
            per_block = {
                "conv.weight": (cout, cin, k, k),
                "bn.weight": (cout,),
                "bn.bias": (cout,),
                "bn.running_mean": (cout,),
                "bn.running_var": (cout,),
                "bn.num_batches_tracked": (),
            }
            for name in BLOCK_TENSOR_NAMES:
                shapes[f"blocks.{j}.{name}"] = per_block[name]
        return shapes

    def validate(self, where: str = "learngene config") -> None:
        """Check the format, the layer rows and the channel contract; raise :class:`ArtifactError`.

        ``where`` names the file or object in the message.
        """
        if self.format != FORMAT_NAME:
            raise ArtifactError(f"{where} has format {self.format!r}, not {FORMAT_NAME!r}: this is not a learngene. Check the path or repo id.")
        try:
            version = int(self.format_version)
        except (TypeError, ValueError):
            raise ArtifactError(f"{where} has an unreadable format_version {self.format_version!r}; re-save the learngene.") from None
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{where} uses learngene format version {version}, newer than this learngene-hf supports ({FORMAT_VERSION}); "
                "upgrade learngene-hf (pip install -U learngene-hf)."
            )
        if version < 1:
            raise ArtifactError(f"{where} has an invalid format_version {version}; re-save the learngene.")
        if self.form not in FORMS:
            raise ArtifactError(
                f"{where} has form {self.form!r}; this learngene-hf knows {list(FORMS)}. Upgrade learngene-hf, or check the file."
            )
        if self.form == "linear_expansion":
            _validate_expansion(self.expansion, where)
            return
        if not isinstance(self.layers, list) or not self.layers:
            raise ArtifactError(f"{where} lists no inherited layers; re-extract the learngene with the Inheritor.")
        for j, layer in enumerate(self.layers):
            missing = [key for key in ("name", "in_channels", "out_channels", "kernel_size") if key not in layer]
            if missing:
                raise ArtifactError(f"{where}: layer {j} lacks {missing}; the config is damaged, re-save the learngene.")
            for key in ("in_channels", "out_channels", "kernel_size"):
                if not isinstance(layer[key], int) or layer[key] <= 0:
                    raise ArtifactError(f"{where}: layer {j} ({layer['name']}) has {key}={layer[key]!r}; it must be a positive integer.")
        for j in range(len(self.layers) - 1):
            out, nxt = self.layers[j]["out_channels"], self.layers[j + 1]["in_channels"]
            if out != nxt:
                raise ArtifactError(
                    f"{where}: layer {j} ({self.layers[j]['name']}) writes {out} channels but layer {j + 1} "
                    f"({self.layers[j + 1]['name']}) reads {nxt}; the inherited blocks do not chain. Re-extract the learngene."
                )
        if self.in_channels != self.layers[0]["in_channels"] or self.out_channels != self.layers[-1]["out_channels"]:
            raise ArtifactError(
                f"{where}: channel contract {self.in_channels}->{self.out_channels} does not match the layers "
                f"({self.layers[0]['in_channels']}->{self.layers[-1]['out_channels']}); the config was edited or damaged, re-save it."
            )
        if self.position not in POSITIONS:
            raise ArtifactError(f"{where}: position {self.position!r} is not one of {list(POSITIONS)}; re-save the learngene.")
        if not isinstance(self.input_stride, int) or self.input_stride < 1:
            raise ArtifactError(f"{where}: input_stride {self.input_stride!r} must be a positive integer; re-save the learngene.")


class Learngene:
    """A learngene: its :class:`LearngeneConfig` and its tensors (CPU, by stable name)."""

    def __init__(self, config: LearngeneConfig, tensors: dict[str, torch.Tensor]):
        self.config = config
        self.tensors = dict(tensors)

    def __repr__(self) -> str:
        if self.config.form == "linear_expansion":
            arch = self.config.expansion
            return (
                f"Learngene(form='linear_expansion', rule={arch['rule']!r}, width {arch['embed_dim']}, trained at depth "
                f"{arch['depth']}, parameters={self.num_parameters():,})"
            )
        names = ", ".join(self.config.layer_names)
        return (
            f"Learngene(layers=[{names}], position={self.config.position!r}, "
            f"channels {self.config.in_channels}->{self.config.out_channels}, parameters={self.num_parameters():,})"
        )

    @classmethod
    def from_collective(cls, model: CollectiveModel, layers: Sequence[int], **metadata: Any) -> "Learngene":
        """Copy the conv blocks ``layers`` (contiguous, increasing indices) out of ``model``.

        ``metadata`` fills the other :class:`LearngeneConfig` fields (``source``, ``selection``,
        ``task_stream``, ``preprocessing``); ``sizes`` is computed here.
        """
        layers = [int(i) for i in layers]
        n = model.config.num_layers
        if not layers:
            raise ConfigError("A learngene needs at least one layer; pass e.g. layers=[0, 1, 2].")
        if any(not 0 <= i < n for i in layers):
            raise ConfigError(f"Layer indices {layers} are out of range: the collective model has {n} conv layers (0..{n - 1}).")
        if layers != list(range(layers[0], layers[0] + len(layers))):
            raise ConfigError(f"Learngene layers must be contiguous and increasing, got {layers}.")
        cfg = model.config
        rows, tensors = [], {}
        for j, index in enumerate(layers):
            block = model.blocks[index]
            rows.append(
                {
                    "name": cfg.layer_names[index],
                    "source_index": index,
                    "in_channels": block.conv.in_channels,
                    "out_channels": block.conv.out_channels,
                    "kernel_size": block.conv.kernel_size[0],
                    "pool": bool(cfg.pool[index]),
                }
            )
            state = block.state_dict()
            for name in BLOCK_TENSOR_NAMES:
                tensors[f"blocks.{j}.{name}"] = state[name].detach().to("cpu").clone().contiguous()
        first, last = layers[0], layers[-1]
        if first == 0 and last == n - 1:
            position = "whole"
        elif first == 0:
            position = "input"
        elif last == n - 1:
            position = "output"
        else:
            position = "middle"
        source = {
            "model_type": cfg.model_type,
            "preset": cfg.preset,
            "widths": list(cfg.widths),
            "pool": list(cfg.pool),
            "layer_names": list(cfg.layer_names),
            **metadata.pop("source", {}),
        }
        collective_params = sum(p.numel() for p in model.parameters())
        collective_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        config = LearngeneConfig(
            layers=rows,
            in_channels=rows[0]["in_channels"],
            out_channels=rows[-1]["out_channels"],
            position=position,
            input_stride=2 ** sum(cfg.pool[:first]),
            source=source,
            **metadata,
        )
        learngene = cls(config, tensors)
        config.sizes = {
            "learngene_parameters": learngene.num_parameters(),
            "learngene_bytes": learngene.num_bytes(),
            "collective_parameters": collective_params,
            "collective_bytes": collective_bytes,
            "parameter_fraction": learngene.num_parameters() / collective_params,
        }
        return learngene

    @classmethod
    def from_vit_collective(cls, model: Any, **metadata: Any) -> "Learngene":
        """The linear-expansion learngene of a :class:`~learngene_hf.vit.ViTCollectiveModel`
        trained with ``expansion="linear"``: its base and increment tensors of every block
        parameter and its embeddings / final norm. ``metadata``: ``source``, ``selection``,
        ``task_stream``, ``preprocessing`` entries of the config."""
        cfg = model.config
        tensors = model.learngene_tensors()
        expansion = {
            "rule": cfg.expansion_rule,
            "depth": int(cfg.depth),
            "embed_dim": int(cfg.embed_dim),
            "num_heads": int(cfg.num_heads),
            "mlp_ratio": float(cfg.mlp_ratio),
            "patch_size": int(cfg.patch_size),
            "image_size": int(cfg.image_size),
            "in_channels": int(cfg.in_channels),
            "shapes": {name: list(t.shape) for name, t in tensors.items()},
        }
        source = {"model_type": cfg.model_type, "preset": cfg.preset, "depth": int(cfg.depth), "embed_dim": int(cfg.embed_dim)}
        source.update(metadata.pop("source", {}) or {})
        selection = metadata.pop("selection", None) or {
            "strategy": "linear_expansion",
            "reason": f"the whole base/increment pair of the {cfg.depth}-block linear-expansion collective ViT (TLEG)",
        }
        config = LearngeneConfig(
            layers=[], in_channels=int(cfg.in_channels), out_channels=int(cfg.embed_dim), position="whole",
            family="vit", source=source, selection=selection, form="linear_expansion", expansion=expansion, **metadata,
        )
        learngene = cls(config, tensors)
        collective_params = sum(p.numel() for p in model.parameters())
        block_params = sum(p.numel() for p in model.vit.blocks.parameters())
        config.sizes = {
            "learngene_parameters": learngene.num_parameters(),
            "learngene_bytes": learngene.num_bytes(),
            "collective_parameters": collective_params,
            "collective_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "parameter_fraction": learngene.num_parameters() / collective_params,
            "block_parameters": block_params,
            "unconstrained_block_parameters": block_params // 2 * int(cfg.depth),
        }
        return learngene

    def descendant_block_parameters(self, num_blocks: int) -> int:
        """Block parameters of a ``num_blocks``-block descendant at the learngene's width
        (linear-expansion learngenes)."""
        return self._block_tensor_parameters() // 2 * int(num_blocks)

    def _block_tensor_parameters(self) -> int:
        return sum(t.numel() for n, t in self.tensors.items() if n.startswith(("base.", "inc.")))

    def block_state_dict(self, j: int) -> dict[str, torch.Tensor]:
        """Tensors of inherited block ``j`` with names relative to the block (``conv.weight``, ...)."""
        prefix = f"blocks.{j}."
        return {name[len(prefix):]: t for name, t in self.tensors.items() if name.startswith(prefix)}

    def num_parameters(self) -> int:
        """Learnable parameters (conv weights, BatchNorm scale and shift; every tensor of a
        linear-expansion learngene), buffers excluded."""
        if self.config.form == "linear_expansion":
            return sum(t.numel() for t in self.tensors.values())
        return sum(t.numel() for n, t in self.tensors.items() if n.endswith(("conv.weight", "bn.weight", "bn.bias")))

    def num_bytes(self) -> int:
        """Bytes of all stored tensors (parameters and BatchNorm buffers)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    # ------------------------------------------------------------------ validation
    def validate(self, where: str = "learngene") -> None:
        """Check the config and that the tensors match it (names, shapes, dtypes).

        Raises :class:`ArtifactError` naming every mismatch and what to do.
        """
        self.config.validate(where)
        _check_tensor_table(
            {name: (tuple(t.shape), t.dtype) for name, t in self.tensors.items()}, self.config, where
        )

    # ------------------------------------------------------------------ saving
    def _safetensors_metadata(self) -> dict[str, str]:
        cfg = self.config
        return {
            "format": FORMAT_NAME,
            "format_version": str(cfg.format_version),
            "layers": json.dumps(cfg.layer_names),
            "in_channels": str(cfg.in_channels),
            "out_channels": str(cfg.out_channels),
            "position": cfg.position,
            "form": cfg.form,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, *, repo_id: str | None = None, model_card: bool = True) -> Path:
        """Write ``learngene.safetensors``, ``learngene_config.json`` and ``README.md`` to ``save_directory``.

        All files are first written to a temporary folder next to the target and then moved into
        place one by one, so an interrupted save never leaves a half-written file. ``repo_id`` is
        used in the model card's usage snippet. Returns the folder.
        """
        from safetensors.torch import save_file

        from .card import learngene_card

        self.validate("learngene to save")
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise ArtifactError(f"{target} exists and is not a folder; choose another output directory.")
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.tensors.items()}
            save_file(tensors, str(staging / WEIGHTS_NAME), metadata=self._safetensors_metadata())
            (staging / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
            names = [WEIGHTS_NAME, CONFIG_NAME]
            if model_card:
                learngene_card(self, repo_id=repo_id).save(staging / CARD_NAME)
                names.append(CARD_NAME)
            for name in names:
                follow_umask(staging / name)  # safetensors writes 0600 files
                os.replace(staging / name, target / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def push_to_hub(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        private: bool = False,
        token: str | None = None,
        commit_message: str = "Upload learngene",
        create_pr: bool = False,
        endpoint: str | None = None,
    ):
        """Create ``repo_id`` if needed and upload the learngene (safetensors, config, model card).

        ``revision`` names a branch (created from ``main`` when it does not exist). ``endpoint``
        is the Hub's URL (default: ``huggingface_hub``'s, i.e. ``HF_ENDPOINT`` or huggingface.co),
        as for ``HfApi(endpoint=...)``. Returns the :class:`huggingface_hub.CommitInfo` (``.oid``
        is the commit sha).
        """
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision not in (None, "main"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="learngene-push-") as folder:
                self.save_pretrained(folder, repo_id=repo_id)
                return api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    revision=revision,
                    commit_message=commit_message,
                    create_pr=create_pr,
                )
        except Exception as err:  # noqa: BLE001 - translated below, others re-raised
            raise _hub_error(err, repo_id, revision, pushing=True) from err

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_dir: str | os.PathLike,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        *,
        force_download: bool = False,
        local_files_only: bool = False,
        endpoint: str | None = None,
    ) -> "Learngene":
        """Load a learngene from a local folder or a Hub repo, validating everything.

        ``endpoint`` is the Hub's URL (default: ``huggingface_hub``'s), as for
        ``snapshot_download(endpoint=...)``.

        Only JSON and safetensors are read (never pickles). Checks the format and its version,
        the channel contract, and that tensor names, shapes and dtypes match the config. From the
        Hub, the resolved commit is recorded in ``config.source["pulled"]`` (``repo_id``,
        ``revision``, ``commit_sha``) so descendants can name the exact version.

        Raises:
            ArtifactError: missing, truncated or inconsistent files.
            HubError: missing repo, unknown revision, gated or private repo without access.
        """
        path = Path(repo_id_or_dir)
        if path.is_dir():
            return cls._load_folder(path, str(path))
        text = str(repo_id_or_dir)
        if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
            raise ArtifactError(f"{text} is not a folder holding a learngene; check the path (or give a Hub repo id like 'org/name').")
        from huggingface_hub import HfApi, snapshot_download

        # snapshot_download quietly falls back to the local cache, which is keyed by repo id only
        # (so it may hold a copy from another server), when the endpoint does not answer: ask the
        # endpoint first, and fail (endpoint given) or say that the cache was used (default endpoint)
        unanswered = None
        if not local_files_only and not _is_commit_sha(revision):
            try:
                HfApi(endpoint=endpoint).repo_info(text, revision=revision, token=token)
            except Exception as err:  # noqa: BLE001 - translated below
                from huggingface_hub.utils import OfflineModeIsEnabled

                if isinstance(err, OfflineModeIsEnabled):  # HF_HUB_OFFLINE: the user chose the cache
                    local_files_only = True
                elif not _does_not_answer(err):
                    raise _hub_error(err, text, revision) from err
                elif endpoint is not None:
                    raise HubError(
                        f"The Hub at {endpoint} does not answer ({type(err).__name__}: {err}); start it or correct the "
                        "endpoint (--hub-endpoint), or pass local_files_only=True to load a copy from the local cache."
                    ) from err
                else:
                    unanswered, local_files_only = f"{HfApi().endpoint} ({type(err).__name__})", True
        try:
            folder = Path(
                snapshot_download(
                    text,
                    revision=revision,
                    token=token,
                    cache_dir=cache_dir,
                    allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
                    force_download=force_download,
                    local_files_only=local_files_only,
                    endpoint=endpoint,
                )
            )
        except Exception as err:  # noqa: BLE001 - translated below, others re-raised
            if unanswered:
                raise HubError(f"The Hub at {unanswered} does not answer, and {text}@{revision or 'main'} is not in the "
                               "local cache; check the network or HF_ENDPOINT.") from err
            raise _hub_error(err, text, revision) from err
        if unanswered:
            from .logs import get_logger

            get_logger(__name__).warning(
                f"The Hub at {unanswered} does not answer: loaded {text}@{revision or 'main'} from the local cache, "
                f"commit {folder.name} (the cache does not record which server it came from)."
            )
        learngene = cls._load_folder(folder, f"{text}@{revision or 'main'}", hub=True)
        learngene.config.source["pulled"] = {"repo_id": text, "revision": revision or "main", "commit_sha": folder.name}
        return learngene

    @classmethod
    def _load_folder(cls, folder: Path, where: str, hub: bool = False) -> "Learngene":
        from safetensors import SafetensorError, safe_open

        redo = "re-download it with force_download=True" if hub else "re-save it with save_pretrained"
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for needed in (config_path, weights_path):
            if not needed.is_file():
                raise ArtifactError(
                    f"{where} has no {needed.name}: it is not a learngene (or the upload was incomplete). "
                    "Check the path / repo id, or re-save the learngene."
                )
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ArtifactError(f"{where}: {CONFIG_NAME} is not valid JSON ({err}); it is truncated or corrupt, {redo}.") from err
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: {CONFIG_NAME} does not hold a JSON object; {redo}.")
        try:
            config = LearngeneConfig.from_dict(data)
        except TypeError as err:
            raise ArtifactError(f"{where}: {CONFIG_NAME} lacks required fields ({err}); {redo}.") from err
        config.validate(f"{where}: {CONFIG_NAME}")
        try:
            with safe_open(str(weights_path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                table = {}
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    table[name] = (tuple(piece.get_shape()), _DTYPES.get(piece.get_dtype(), piece.get_dtype()))
                _check_metadata(metadata, config, f"{where}: {WEIGHTS_NAME}")
                _check_tensor_table(table, config, f"{where}: {WEIGHTS_NAME}")
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except SafetensorError as err:
            raise ArtifactError(
                f"{where}: {WEIGHTS_NAME} is truncated or corrupt ({err}); {redo}."
            ) from err
        return cls(config, tensors)


_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "I8": torch.int8,
    "BOOL": torch.bool,
}


def _check_metadata(metadata: dict[str, str], config: LearngeneConfig, where: str) -> None:
    if metadata.get("format") != FORMAT_NAME:
        raise ArtifactError(
            f"{where} has safetensors metadata format {metadata.get('format')!r}, not {FORMAT_NAME!r}: it was not written "
            "by learngene-hf. Re-save the learngene with Learngene.save_pretrained."
        )
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ArtifactError(f"{where} has no readable format_version in its metadata; re-save the learngene.") from None
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{where} uses format version {version}, newer than supported ({FORMAT_VERSION}); upgrade learngene-hf.")
    form = metadata.get("form", "layers")  # files written before forms existed hold layers
    if form != config.form:
        raise ArtifactError(
            f"{where} holds a {form!r} learngene but {CONFIG_NAME} describes a {config.form!r} one: the two files come from "
            "different learngenes. Keep the two files from the same save (re-save or re-download both)."
        )
    if "layers" in metadata:
        try:
            names = json.loads(metadata["layers"])
        except json.JSONDecodeError:
            raise ArtifactError(f"{where}: the 'layers' metadata is not JSON; the file is corrupt, re-save the learngene.") from None
        if names != config.layer_names:
            raise ArtifactError(
                f"{where} holds layers {names} but {CONFIG_NAME} describes {config.layer_names}: the config does not match "
                "the tensors. Keep the two files from the same save (re-save or re-download both)."
            )


def linear_expansion_shapes(expansion: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a linear-expansion learngene's tensors, from its architecture."""
    block = block_tensor_shapes(int(expansion["embed_dim"]), mlp_hidden(int(expansion["embed_dim"]), float(expansion["mlp_ratio"])))
    embed = embedding_tensor_shapes(
        int(expansion["embed_dim"]), int(expansion["patch_size"]), int(expansion.get("in_channels", 3)), int(expansion["image_size"])
    )
    shapes = {f"{part}.{name}": block[name] for part in ("base", "inc") for name in BLOCK_PARAMETER_NAMES}
    shapes.update({f"embed.{name}": embed[name] for name in EMBEDDING_TENSOR_NAMES})
    return shapes


def _validate_expansion(expansion: Any, where: str) -> None:
    """Check the ``expansion`` section of a linear-expansion learngene config."""
    fix = "re-extract the learngene with the Inheritor (or Learngene.from_vit_collective)"
    if not isinstance(expansion, dict) or not expansion:
        raise ArtifactError(f"{where}: form 'linear_expansion' needs an 'expansion' section (rule, architecture, shapes); {fix}.")
    missing = [key for key in EXPANSION_KEYS if key not in expansion]
    if missing:
        raise ArtifactError(f"{where}: the expansion section lacks {missing}; {fix}.")
    if expansion["rule"] not in EXPANSION_RULES:
        raise ArtifactError(
            f"{where}: expansion rule {expansion['rule']!r} is unknown; this learngene-hf knows {list(EXPANSION_RULES)}. "
            "Upgrade learngene-hf or fix the rule."
        )
    for key in ("depth", "embed_dim", "num_heads", "patch_size", "image_size", "in_channels"):
        value = expansion[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ArtifactError(f"{where}: expansion {key}={value!r} must be a positive integer; {fix}.")
    if expansion["depth"] < 2:
        raise ArtifactError(f"{where}: expansion depth {expansion['depth']} < 2: a base/increment pair is learnt by at least 2 blocks; {fix}.")
    if not isinstance(expansion["mlp_ratio"], (int, float)) or expansion["mlp_ratio"] <= 0:
        raise ArtifactError(f"{where}: expansion mlp_ratio={expansion['mlp_ratio']!r} must be a positive number; {fix}.")
    if expansion["embed_dim"] % expansion["num_heads"]:
        raise ArtifactError(f"{where}: embed_dim {expansion['embed_dim']} is not divisible by num_heads {expansion['num_heads']}; {fix}.")
    if expansion["image_size"] % expansion["patch_size"]:
        raise ArtifactError(f"{where}: image_size {expansion['image_size']} is not a multiple of patch_size {expansion['patch_size']}; {fix}.")
    recorded = expansion["shapes"]
    expected = linear_expansion_shapes(expansion)
    if not isinstance(recorded, dict) or {k: tuple(v) for k, v in recorded.items()} != expected:
        got = recorded if not isinstance(recorded, dict) else {k: list(v) for k, v in recorded.items() if tuple(v) != expected.get(k)}
        raise ArtifactError(
            f"{where}: the recorded shapes do not match the architecture (embed_dim {expansion['embed_dim']}, mlp_ratio "
            f"{expansion['mlp_ratio']}, patch {expansion['patch_size']}, image {expansion['image_size']}): differing or unexpected "
            f"{got}, missing {sorted(set(expected) - set(recorded if isinstance(recorded, dict) else {}))}; {fix}."
        )


def _check_tensor_table(table: dict[str, tuple[tuple[int, ...], Any]], config: LearngeneConfig, where: str) -> None:
    """Compare ``{name: (shape, dtype)}`` with ``config.expected_tensor_shapes()``; raise on mismatch."""
    expected = config.expected_tensor_shapes()
    missing = sorted(set(expected) - set(table))
    unexpected = sorted(set(table) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for name in sorted(set(expected) & set(table)):
        shape, dtype = table[name]
        if tuple(shape) != tuple(expected[name]):
            problems.append(f"{name} has shape {list(shape)}, expected {list(expected[name])}")
        if name.endswith("num_batches_tracked"):
            if dtype != torch.int64:
                problems.append(f"{name} has dtype {dtype}, expected torch.int64")
        elif dtype not in _FLOAT_DTYPES:
            problems.append(f"{name} has dtype {dtype}, expected a floating point dtype")
    if problems:
        raise ArtifactError(
            f"{where} does not match its config: " + "; ".join(problems)
            + ". The config and the tensors come from different learngenes or were edited: re-save or re-download both files."
        )


def resolve_learngene(
    learngene_or_ref: Any,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> tuple["Learngene", dict[str, Any]]:
    """Return ``(learngene, origin)`` for a ``Learngene``, a local folder or a Hub repo id (what
    :meth:`~learngene_hf.IndividualModel.from_learngene` accepts).

    ``origin`` holds ``repo_id``, ``revision`` and ``commit_sha`` as far as they are known (from
    ``learngene.config.source["pulled"]``, written when it was pulled from the Hub, else from the
    reference given).
    """
    if not isinstance(learngene_or_ref, (str, os.PathLike)):
        return learngene_origin(learngene_or_ref, revision)
    ref = os.fspath(learngene_or_ref)
    learngene = Learngene.from_pretrained(ref, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint)
    is_dir = os.path.isdir(ref)
    origin = {"repo_id": os.path.abspath(ref) if is_dir else ref, "revision": None if is_dir else revision, "commit_sha": None}
    return learngene_origin(learngene, revision, origin)


def _is_commit_sha(revision: str | None) -> bool:
    """A full 40-hex commit sha: its files never change, so a cached copy is the same everywhere."""
    return revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _does_not_answer(err: Exception) -> bool:
    """Whether a Hub client error means the server did not answer (no connection, timeout, 5xx)."""
    from huggingface_hub import errors as hub_errors

    names = {cls.__name__ for cls in type(err).__mro__}
    if names & {"TransportError", "ConnectionError", "Timeout", "TimeoutError"}:
        return True
    status = getattr(getattr(err, "response", None), "status_code", None)
    return isinstance(err, hub_errors.HfHubHTTPError) and isinstance(status, int) and status >= 500


def _hub_error(err: Exception, repo_id: str, revision: str | None, pushing: bool = False) -> Exception:
    """Translate a huggingface_hub exception into a :class:`HubError` that says what to do."""
    from huggingface_hub import errors as hub_errors

    if isinstance(err, (ArtifactError, ConfigError)):
        return err
    rev = revision or "main"
    if isinstance(err, hub_errors.GatedRepoError):
        return HubError(
            f"{repo_id} is a gated repo: accept its conditions on the Hub page, then pass token=... "
            "(or log in with `hf auth login`)."
        )
    if isinstance(err, hub_errors.RevisionNotFoundError):
        return HubError(f"Revision {rev!r} does not exist in {repo_id}; check the branch, tag or commit sha (the default is 'main').")
    if isinstance(err, hub_errors.RepositoryNotFoundError):
        return HubError(
            f"Repo {repo_id} was not found on the Hub (nor as a local folder), or it is private and no valid token "
            "was given. Check the repo id / path, "
            "or pass token=... (or log in with `hf auth login`) for a private repo."
        )
    if isinstance(err, (hub_errors.EntryNotFoundError, hub_errors.RemoteEntryNotFoundError)):
        return HubError(f"{repo_id}@{rev} lacks a learngene file ({err}); is it a learngene repo? Push one with Learngene.push_to_hub.")
    if isinstance(err, hub_errors.LocalEntryNotFoundError):
        return HubError(
            f"{repo_id}@{rev} is not in the local cache and the Hub could not be reached; check the network / HF_ENDPOINT, "
            "or drop local_files_only / HF_HUB_OFFLINE."
        )
    if isinstance(err, hub_errors.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            action = "write access (a token with write permission)" if pushing else "access"
            return HubError(f"The Hub refused {action} to {repo_id} (HTTP {status}); pass token=... with the right permissions.")
        return HubError(f"The Hub request for {repo_id}@{rev} failed ({err}); check the repo id, the token and the endpoint.")
    return err
