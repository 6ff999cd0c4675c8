"""The learngene artifact: a few conv blocks of a collective model plus what is needed to inherit them.

A :class:`Learngene` is to a collective model what a PEFT adapter is to its base model: a tiny
artifact (``learngene_config.json`` + ``learngene.safetensors``) that names where it came from and
the channel contract a descendant must satisfy, and that is validated when loaded.

Tensor names are stable and independent of where the block sat in the collective model:
``blocks.{j}.conv.weight``, ``blocks.{j}.bn.weight``, ``blocks.{j}.bn.bias``,
``blocks.{j}.bn.running_mean``, ``blocks.{j}.bn.running_var``, ``blocks.{j}.bn.num_batches_tracked``
for ``j = 0 .. len(config.layers) - 1``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .collective import CollectiveModel
from .errors import ConfigError
from .layers import BLOCK_TENSOR_NAMES

FORMAT_NAME = "learngene-hf"
FORMAT_VERSION = 1


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


class Learngene:
    """A learngene: its :class:`LearngeneConfig` and its tensors (CPU, by stable name)."""

    def __init__(self, config: LearngeneConfig, tensors: dict[str, torch.Tensor]):
        self.config = config
        self.tensors = dict(tensors)

    def __repr__(self) -> str:
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

    def block_state_dict(self, j: int) -> dict[str, torch.Tensor]:
        """Tensors of inherited block ``j`` with names relative to the block (``conv.weight``, ...)."""
        prefix = f"blocks.{j}."
        return {name[len(prefix):]: t for name, t in self.tensors.items() if name.startswith(prefix)}

    def num_parameters(self) -> int:
        """Learnable parameters (conv weights, BatchNorm scale and shift), buffers excluded."""
        return sum(t.numel() for n, t in self.tensors.items() if n.endswith(("conv.weight", "bn.weight", "bn.bias")))

    def num_bytes(self) -> int:
        """Bytes of all stored tensors (parameters and BatchNorm buffers)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())
