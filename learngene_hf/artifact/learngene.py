"""The learngene: what a descendant inherits from a collective model, and how.

A :class:`Learngene` is to a collective model what a PEFT adapter is to its base model: a tiny
artifact (``learngene_config.json`` + ``learngene.safetensors``, see ``config.py`` for the format)
that names where it came from and the channel contract a descendant must satisfy, and that is
validated when loaded (``save_and_load.py``).

* :meth:`Learngene.from_collective`: a run of conv blocks of a VGG-BN collective model (form
  ``"layers"``); :meth:`Learngene.from_vit_collective`: the base/increment pair of a
  linear-expansion collective ViT (form ``"linear_expansion"``).
* :meth:`Learngene.save_pretrained`, :meth:`Learngene.push_to_hub`, :meth:`Learngene.from_pretrained`.
* :attr:`Learngene.origin`: the Hub repo, revision and commit it was pulled from (when it was),
  which descendants record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ArtifactError, ConfigError
from ..models.collective import CollectiveModel
from ..models.layers import BLOCK_TENSOR_NAMES
from . import save_and_load
from .config import LearngeneConfig, check_tensor_table, check_tensor_values
from .narrow import check_widths, narrow_block_state


class Learngene:
    """A learngene: its :class:`LearngeneConfig` and its tensors (CPU, by stable name)."""

    def __init__(self, config: LearngeneConfig, tensors: dict[str, torch.Tensor]):
        self.config = config
        self.tensors = dict(tensors)

    def __repr__(self) -> str:
        if self.config.form == "linear_expansion":
            arch = self.config.expansion
            return (
                f"Learngene(form='linear_expansion', rule={arch['rule']!r}, width {arch['embed_dim']}, trained at "
                "depth "
                f"{arch['depth']}, parameters={self.num_parameters():,})"
            )
        names = ", ".join(self.config.layer_names)
        return (
            f"Learngene(layers=[{names}], position={self.config.position!r}, "
            f"channels {self.config.in_channels}->{self.config.out_channels}, parameters={self.num_parameters():,})"
        )

    @classmethod
    def from_collective(
        cls, model: CollectiveModel, layers: Sequence[int], widths: Sequence[int] | None = None, **metadata: Any
    ) -> "Learngene":
        """Copy the conv blocks ``layers`` (contiguous, increasing indices) out of ``model``.

        ``widths`` (one per layer, each at most the collective layer's width): take the blocks
        narrower, by weight selection of evenly spaced channels (:mod:`~learngene_hf.artifact.narrow`;
        :func:`~learngene_hf.artifact.narrow.widths_for_budget` finds widths that fit a byte
        budget); the first block keeps all its input channels. ``source["channel_selection"]``
        records it. ``metadata`` fills the other :class:`LearngeneConfig` fields (``source``,
        ``selection``, ``task_stream``, ``preprocessing``); ``sizes`` is computed here.
        """
        layers = [int(i) for i in layers]
        n = model.config.num_layers
        if not layers:
            raise ConfigError("A learngene needs at least one layer; pass e.g. layers=[0, 1, 2].")
        if any(not 0 <= i < n for i in layers):
            raise ConfigError(
                f"Layer indices {layers} are out of range: the collective model has {n} conv layers (0..{n - 1})."
            )
        if layers != list(range(layers[0], layers[0] + len(layers))):
            raise ConfigError(f"Learngene layers must be contiguous and increasing, got {layers}.")
        cfg = model.config
        full = [int(model.blocks[i].conv.out_channels) for i in layers]
        kept = full if widths is None else check_widths(widths, full)
        rows, tensors = [], {}
        in_channels = int(model.blocks[layers[0]].conv.in_channels)
        for j, index in enumerate(layers):
            block = model.blocks[index]
            rows.append(
                {
                    "name": cfg.layer_names[index],
                    "source_index": index,
                    "in_channels": in_channels,
                    "out_channels": kept[j],
                    "kernel_size": block.conv.kernel_size[0],
                    "pool": bool(cfg.pool[index]),
                }
            )
            state = narrow_block_state(block.state_dict(), in_channels, kept[j])
            for name in BLOCK_TENSOR_NAMES:
                tensors[f"blocks.{j}.{name}"] = state[name]
            in_channels = kept[j]
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
        if kept != full:
            source["channel_selection"] = {"rule": "evenly spaced channels (weight selection)", "widths": kept,
                                           "source_widths": full}  # fmt: skip
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
        """The linear-expansion learngene of a :class:`~learngene_hf.models.vit_collective.ViTCollectiveModel`
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
        source = {
            "model_type": cfg.model_type,
            "preset": cfg.preset,
            "depth": int(cfg.depth),
            "embed_dim": int(cfg.embed_dim),
        }
        source.update(metadata.pop("source", {}) or {})
        selection = metadata.pop("selection", None) or {
            "strategy": "linear_expansion",
            "reason": f"the whole base/increment pair of the {cfg.depth}-block linear-expansion collective ViT (TLEG)",
        }
        config = LearngeneConfig(
            layers=[],
            in_channels=int(cfg.in_channels),
            out_channels=int(cfg.embed_dim),
            position="whole",
            family="vit",
            source=source,
            selection=selection,
            form="linear_expansion",
            expansion=expansion,
            **metadata,
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
        return {name[len(prefix) :]: t for name, t in self.tensors.items() if name.startswith(prefix)}

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
        check_tensor_table({name: (tuple(t.shape), t.dtype) for name, t in self.tensors.items()}, self.config, where)
        check_tensor_values(self.tensors, where)

    @property
    def origin(self) -> dict[str, Any]:
        """``repo_id``, ``revision`` and ``commit_sha`` of the Hub copy this learngene was pulled from
        (``config.source["pulled"]``, written by :meth:`from_pretrained`); ``None`` where unknown."""
        origin: dict[str, Any] = {"repo_id": None, "revision": None, "commit_sha": None}
        pulled = dict((self.config.source or {}).get("pulled") or {})
        origin.update({key: pulled[key] for key in origin if pulled.get(key) is not None})
        return origin

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(
        self, save_directory: str | os.PathLike, *, repo_id: str | None = None, model_card: bool = True
    ) -> Path:
        """Write ``learngene.safetensors``, ``learngene_config.json`` and ``README.md`` to ``save_directory``.

        All files are first written to a temporary folder next to the target and then moved into
        place one by one, so an interrupted save never leaves a half-written file. ``repo_id`` is
        used in the model card's usage snippet. Returns the folder.
        """
        return save_and_load.save_folder(self, save_directory, repo_id=repo_id, model_card=model_card)

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
        options = {"revision": revision, "private": private, "token": token, "commit_message": commit_message}
        return save_and_load.push(self, repo_id, create_pr=create_pr, endpoint=endpoint, **options)

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
            if revision is not None:
                raise ConfigError(
                    f"revision={revision!r} names a version of a Hub repo, but {path} is a local folder, which has "
                    "one version; drop the revision (--revision), or give the Hub repo id."
                )
            return cls(*save_and_load.load_folder(path, str(path)))
        text = str(repo_id_or_dir)
        if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
            raise ArtifactError(
                f"{text} is not a folder holding a learngene; check the path (or give a Hub repo id like 'org/name')."
            )
        options = {"token": token, "cache_dir": cache_dir, "force_download": force_download, "endpoint": endpoint}
        folder = save_and_load.download(text, revision, local_files_only=local_files_only, **options)
        learngene = cls(*save_and_load.load_folder(folder, f"{text}@{revision or 'main'}", hub=True))
        learngene.config.source["pulled"] = {"repo_id": text, "revision": revision or "main", "commit_sha": folder.name}
        return learngene
