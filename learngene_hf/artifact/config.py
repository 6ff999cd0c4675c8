"""The learngene artifact's format: file names, the typed config (``learngene_config.json``) and
its validation.

Two forms share one format (``learngene_config.json`` + ``learngene.safetensors``):

* ``"form": "layers"`` (the default; files without the field are layers): a few conv blocks of a
  VGG-BN collective model, copied as they are into an individual model.
* ``"form": "linear_expansion"`` (TLEG): two tensors per transformer-block parameter, ``base.<p>``
  and ``inc.<p>``, plus the patch embedding, class token, position embedding and final norm
  (``embed.<name>``); block ``l`` of an ``L``-block descendant starts at ``base + c(l, L) * inc``.
  ``config.expansion`` records the rule, the architecture and the shapes.

Layer tensor names are stable and independent of where the block sat in the collective model:
``blocks.{j}.conv.weight``, ``blocks.{j}.bn.weight``, ``blocks.{j}.bn.bias``,
``blocks.{j}.bn.running_mean``, ``blocks.{j}.bn.running_var``, ``blocks.{j}.bn.num_batches_tracked``
for ``j = 0 .. len(config.layers) - 1``.

:class:`LearngeneConfig` validates itself (:meth:`LearngeneConfig.validate`) and a tensor table
against itself (:func:`check_tensor_table`); the loader (``save_and_load.py``) and the
:class:`~learngene_hf.artifact.learngene.Learngene` call them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ArtifactError
from ..models.layers import BLOCK_TENSOR_NAMES
from ..models.vit import (
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
EXPANSION_KEYS = (
    "rule",
    "depth",
    "embed_dim",
    "num_heads",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "in_channels",
    "shapes",
)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


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
            reason), written by the :class:`~learngene_hf.selection.inheritor.Inheritor`.
        task_stream: what the collective model learnt (dataset, classes, number of tasks, ways).
        sizes: parameter counts and bytes of the learngene and of the collective model.
        preprocessing: image size, mean and std the collective model was trained with.
        form: ``"layers"`` or ``"linear_expansion"`` (see the module docstring).
        expansion: for ``"linear_expansion"``: ``rule`` (a :data:`~learngene_hf.models.vit.EXPANSION_RULES`
            name), the source architecture (``depth``, ``embed_dim``, ``num_heads``, ``mlp_ratio``,
            ``patch_size``, ``image_size``, ``in_channels``) and ``shapes`` ({tensor name: shape}).
        checksums: ``{file name: sha256 hex digest}`` of the saved tensor file, written by
            ``save_pretrained`` and verified on load (empty for learngenes saved before it existed,
            which still load).
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
    checksums: dict[str, str] = field(default_factory=dict)

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
    def from_dict(cls, data: dict[str, Any], where: str = "learngene config") -> "LearngeneConfig":
        """The config of ``data`` (a parsed ``learngene_config.json``). Unknown fields, missing
        required ones and values of the wrong type raise :class:`ArtifactError` naming ``where``."""
        check_field_types(data, where)
        return cls(**data)

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
            raise ArtifactError(
                f"{where} has format {self.format!r}, not {FORMAT_NAME!r}: this is not a learngene. Check the path or "
                "repo id."
            )
        try:
            version = int(self.format_version)
        except (TypeError, ValueError):
            raise ArtifactError(
                f"{where} has an unreadable format_version {self.format_version!r}; re-save the learngene."
            ) from None
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{where} uses learngene format version {version}, newer than this learngene-hf supports "
                f"({FORMAT_VERSION}); "
                "upgrade learngene-hf (pip install -U learngene-hf)."
            )
        if version < 1:
            raise ArtifactError(f"{where} has an invalid format_version {version}; re-save the learngene.")
        if self.form not in FORMS:
            raise ArtifactError(
                f"{where} has form {self.form!r}; this learngene-hf knows {list(FORMS)}. Upgrade learngene-hf, or "
                "check the file."
            )
        check_nested_types(self, where)
        if self.form == "linear_expansion":
            validate_expansion(self.expansion, where)
            return
        if not isinstance(self.layers, list) or not self.layers:
            raise ArtifactError(f"{where} lists no inherited layers; re-extract the learngene with the Inheritor.")
        for j, layer in enumerate(self.layers):
            missing = [key for key in ("name", "in_channels", "out_channels", "kernel_size") if key not in layer]
            if missing:
                raise ArtifactError(
                    f"{where}: layer {j} lacks {missing}; the config is damaged, re-save the learngene."
                )
            for key in ("in_channels", "out_channels", "kernel_size"):
                if not isinstance(layer[key], int) or layer[key] <= 0:
                    raise ArtifactError(
                        f"{where}: layer {j} ({layer['name']}) has {key}={layer[key]!r}; it must be a positive integer."
                    )
        for j in range(len(self.layers) - 1):
            out, nxt = self.layers[j]["out_channels"], self.layers[j + 1]["in_channels"]
            if out != nxt:
                raise ArtifactError(
                    f"{where}: layer {j} ({self.layers[j]['name']}) writes {out} channels but layer {j + 1} "
                    f"({self.layers[j + 1]['name']}) reads {nxt}; the inherited blocks do not chain. Re-extract the "
                    "learngene."
                )
        if self.in_channels != self.layers[0]["in_channels"] or self.out_channels != self.layers[-1]["out_channels"]:
            raise ArtifactError(
                f"{where}: channel contract {self.in_channels}->{self.out_channels} does not match the layers "
                f"({self.layers[0]['in_channels']}->{self.layers[-1]['out_channels']}); the config was edited or "
                "damaged, re-save it."
            )
        if self.position not in POSITIONS:
            raise ArtifactError(
                f"{where}: position {self.position!r} is not one of {list(POSITIONS)}; re-save the learngene."
            )
        if not isinstance(self.input_stride, int) or self.input_stride < 1:
            raise ArtifactError(
                f"{where}: input_stride {self.input_stride!r} must be a positive integer; re-save the learngene."
            )


#: The JSON type of every field of ``learngene_config.json`` (``int`` excludes booleans).
FIELD_TYPES: dict[str, type] = {
    "layers": list,
    "in_channels": int,
    "out_channels": int,
    "position": str,
    "input_stride": int,
    "family": str,
    "source": dict,
    "selection": dict,
    "task_stream": dict,
    "sizes": dict,
    "preprocessing": dict,
    "format": str,
    "format_version": int,
    "form": str,
    "expansion": dict,
    "checksums": dict,
}
REQUIRED_FIELDS = ("layers", "in_channels", "out_channels", "position")
#: Entries that decide a descendant's architecture, by section: ``"ints"`` a list of positive
#: integers, ``"bools"`` a list of true/false, ``"int"`` a positive integer, ``"number"`` a number.
ARCHITECTURE_ENTRIES: dict[str, dict[str, str]] = {
    "source": {
        "widths": "ints",
        "pool": "bools",
        "head_hidden": "ints",
        "feature_pool_size": "int",
        "dropout": "number",
        "depth": "int",
        "embed_dim": "int",
    },
    "preprocessing": {"image_size": "int"},
}
_KIND_TEXT = {
    "ints": "a list of positive integers",
    "bools": "a list of true/false",
    "int": "a positive integer",
    "number": "a number",
}


def _json_type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object" if isinstance(value, dict) else type(value).__name__
    )


def check_field_types(data: dict[str, Any], where: str) -> None:
    """Refuse unknown fields, missing required ones and top-level values of the wrong JSON type."""
    unknown = sorted(set(data) - set(FIELD_TYPES))
    if unknown:
        raise ArtifactError(
            f"{where} has unknown fields {unknown}; it was edited, or written by a newer learngene-hf. Remove them, "
            "or upgrade learngene-hf (pip install -U learngene-hf)."
        )
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise ArtifactError(f"{where} lacks the required fields {missing}; re-save the learngene.")
    for name, value in data.items():
        kind = FIELD_TYPES[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ArtifactError(
                f"{where}: field {name!r} is {_json_type_name(value)} ({value!r:.60}), expected "
                f"{_json_type_name(kind())}; the file was edited or damaged, re-save the learngene."
            )


def _fits(value: Any, kind: str) -> bool:
    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if kind == "ints":
        return isinstance(value, list) and all(positive_int(v) for v in value)
    if kind == "bools":
        return isinstance(value, list) and all(isinstance(v, bool) for v in value)
    if kind == "int":
        return positive_int(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_nested_types(config: "LearngeneConfig", where: str) -> None:
    """Check the entries a descendant's architecture is built from: the layer rows' ``pool``,
    ``source_index`` and ``name``, and :data:`ARCHITECTURE_ENTRIES` (``source.pool: ["no"]`` would
    otherwise read as True and change the architecture)."""
    for section, entries in ARCHITECTURE_ENTRIES.items():
        values = getattr(config, section)
        for key, kind in entries.items():
            if key in values and values[key] is not None and not _fits(values[key], kind):
                raise ArtifactError(
                    f"{where}: {section}.{key} is {values[key]!r:.80}, expected {_KIND_TEXT[kind]}; the file was "
                    "edited or damaged, re-save the learngene."
                )
    source = config.source
    if isinstance(source.get("widths"), list) and isinstance(source.get("pool"), list):
        if len(source["widths"]) != len(source["pool"]):
            raise ArtifactError(
                f"{where}: source.widths has {len(source['widths'])} entries but source.pool "
                f"{len(source['pool'])}; re-save the learngene."
            )
    for j, layer in enumerate(config.layers):
        if not isinstance(layer, dict):
            raise ArtifactError(f"{where}: layer {j} is {layer!r:.60}, expected an object; re-save the learngene.")
        checks = (("pool", lambda v: isinstance(v, bool), "true or false"),
                  ("source_index", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                   "a non-negative integer"),
                  ("name", lambda v: isinstance(v, str), "a string"))  # fmt: skip
        for key, ok, text in checks:
            if key in layer and not ok(layer[key]):
                raise ArtifactError(
                    f"{where}: layer {j} has {key}={layer[key]!r:.60}, expected {text}; re-save the learngene."
                )
    bad = {k: v for k, v in config.checksums.items() if not (isinstance(v, str) and len(v) == 64)}
    if bad:
        raise ArtifactError(f"{where}: checksums {bad} are not sha256 hex digests; re-save the learngene.")


def check_tensor_values(
    tensors: dict[str, torch.Tensor],
    where: str,
    fix: str = "The learngene is damaged or came from a diverged run: re-extract it from a healthy collective run "
    "(or re-download it).",
) -> None:
    """Refuse non-finite values (NaN, inf) in any floating tensor and negative BatchNorm
    variances (``*.running_var``): a model built from them predicts nothing (NaN logits). A
    variance of exactly 0 (a channel that was constant on every batch) is accepted: BatchNorm adds
    its eps. ``fix`` ends the error message."""
    problems = []
    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            problems.append(f"{name} holds {bad} non-finite values (NaN or inf)")
        elif name.endswith("running_var") and bool((tensor < 0).any()):
            problems.append(
                f"{name} holds {int((tensor < 0).sum())} negative BatchNorm variances (min {float(tensor.min()):g})"
            )
    if problems:
        raise ArtifactError(
            f"{where}: "
            + "; ".join(problems[:4])
            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
            + f". {fix}"
        )


def linear_expansion_shapes(expansion: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a linear-expansion learngene's tensors, from its architecture."""
    block = block_tensor_shapes(
        int(expansion["embed_dim"]), mlp_hidden(int(expansion["embed_dim"]), float(expansion["mlp_ratio"]))
    )
    embed = embedding_tensor_shapes(
        int(expansion["embed_dim"]),
        int(expansion["patch_size"]),
        int(expansion.get("in_channels", 3)),
        int(expansion["image_size"]),
    )
    shapes = {f"{part}.{name}": block[name] for part in ("base", "inc") for name in BLOCK_PARAMETER_NAMES}
    shapes.update({f"embed.{name}": embed[name] for name in EMBEDDING_TENSOR_NAMES})
    return shapes


def validate_expansion(expansion: Any, where: str) -> None:
    """Check the ``expansion`` section of a linear-expansion learngene config."""
    fix = "re-extract the learngene with the Inheritor (or Learngene.from_vit_collective)"
    if not isinstance(expansion, dict) or not expansion:
        raise ArtifactError(
            f"{where}: form 'linear_expansion' needs an 'expansion' section (rule, architecture, shapes); {fix}."
        )
    missing = [key for key in EXPANSION_KEYS if key not in expansion]
    if missing:
        raise ArtifactError(f"{where}: the expansion section lacks {missing}; {fix}.")
    if expansion["rule"] not in EXPANSION_RULES:
        raise ArtifactError(
            f"{where}: expansion rule {expansion['rule']!r} is unknown; this learngene-hf knows "
            f"{list(EXPANSION_RULES)}. "
            "Upgrade learngene-hf or fix the rule."
        )
    for key in ("depth", "embed_dim", "num_heads", "patch_size", "image_size", "in_channels"):
        value = expansion[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ArtifactError(f"{where}: expansion {key}={value!r} must be a positive integer; {fix}.")
    if expansion["depth"] < 2:
        raise ArtifactError(
            f"{where}: expansion depth {expansion['depth']} < 2: a base/increment pair is learnt by at least 2 blocks; "
            f"{fix}."
        )
    if not isinstance(expansion["mlp_ratio"], (int, float)) or expansion["mlp_ratio"] <= 0:
        raise ArtifactError(
            f"{where}: expansion mlp_ratio={expansion['mlp_ratio']!r} must be a positive number; {fix}."
        )
    if expansion["embed_dim"] % expansion["num_heads"]:
        raise ArtifactError(
            f"{where}: embed_dim {expansion['embed_dim']} is not divisible by num_heads {expansion['num_heads']}; "
            f"{fix}."
        )
    if expansion["image_size"] % expansion["patch_size"]:
        raise ArtifactError(
            f"{where}: image_size {expansion['image_size']} is not a multiple of patch_size {expansion['patch_size']}; "
            f"{fix}."
        )
    recorded = expansion["shapes"]
    expected = linear_expansion_shapes(expansion)
    if not isinstance(recorded, dict) or {k: tuple(v) for k, v in recorded.items()} != expected:
        got = (
            recorded
            if not isinstance(recorded, dict)
            else {k: list(v) for k, v in recorded.items() if tuple(v) != expected.get(k)}
        )
        raise ArtifactError(
            f"{where}: the recorded shapes do not match the architecture (embed_dim {expansion['embed_dim']}, "
            "mlp_ratio "
            f"{expansion['mlp_ratio']}, patch {expansion['patch_size']}, image {expansion['image_size']}): differing "
            "or unexpected "
            f"{got}, missing {sorted(set(expected) - set(recorded if isinstance(recorded, dict) else {}))}; {fix}."
        )


def check_tensor_table(table: dict[str, tuple[tuple[int, ...], Any]], config: LearngeneConfig, where: str) -> None:
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
        elif dtype not in FLOAT_DTYPES:
            problems.append(f"{name} has dtype {dtype}, expected a floating point dtype")
    if problems:
        raise ArtifactError(
            f"{where} does not match its config: "
            + "; ".join(problems)
            + ". The config and the tensors come from different learngenes or were edited: re-save or re-download both "
            "files."
        )
