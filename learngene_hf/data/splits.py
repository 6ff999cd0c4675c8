"""Class splits like the paper: base (collective model) / open-world (selection) / novel (evaluation)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError

#: Paper proportions for 100 classes: 64 base, 16 open-world, 20 novel.
DEFAULT_PROPORTIONS: tuple[float, float, float] = (0.64, 0.16, 0.20)
ROLES: tuple[str, ...] = ("base", "open_world", "novel")


def _as_id_list(values: Iterable[int], role: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"{role} classes must be integer class ids, got {v!r}.")
        if v < 0:
            raise ConfigError(f"{role} classes must be non-negative class ids, got {int(v)}.")
        out.append(int(v))
    if len(set(out)) != len(out):
        dups = sorted({c for c in out if out.count(c) > 1})
        raise ConfigError(f"{role} classes list {dups} more than once; list every class once.")
    return out


@dataclass
class ClassSplit:
    """Disjoint lists of global class ids: ``base``, ``open_world`` and ``novel``.

    Validated at construction (integers, no duplicates, no class in two roles).
    """

    base: list[int]
    open_world: list[int] = field(default_factory=list)
    novel: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = _as_id_list(self.base, "base")
        self.open_world = _as_id_list(self.open_world, "open_world")
        self.novel = _as_id_list(self.novel, "novel")
        for i, a in enumerate(ROLES):
            for b in ROLES[i + 1 :]:
                both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
                if both:
                    raise ConfigError(f"classes {both} are both {a} and {b}; the class split must be disjoint.")

    def to_dict(self) -> dict[str, list[int]]:
        """``{"base": [...], "open_world": [...], "novel": [...]}`` (JSON-ready)."""
        return {"base": list(self.base), "open_world": list(self.open_world), "novel": list(self.novel)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassSplit":
        """Inverse of :meth:`to_dict`; missing ``open_world`` / ``novel`` mean empty."""
        if not isinstance(data, dict) or "base" not in data:
            raise ConfigError(f"a class split needs a dict with keys {list(ROLES)}, got {data!r}.")
        unknown = sorted(set(data) - set(ROLES))
        if unknown:
            raise ConfigError(f"unknown keys {unknown} in class split; expected {list(ROLES)}.")
        return cls(list(data["base"]), list(data.get("open_world", [])), list(data.get("novel", [])))

    def classes(self, role: str) -> list[int]:
        """The class ids of ``role`` (``"base"``, ``"open_world"`` or ``"novel"``)."""
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; use one of {list(ROLES)}.")
        return list(getattr(self, role))

    def require(self, role: str, ways: int) -> list[int]:
        """The classes of ``role``, checking that it has at least ``ways`` classes (ConfigError otherwise)."""
        classes = self.classes(role)
        check_ways(classes, ways, role)
        return classes


def check_ways(classes: list[int], ways: int, role: str = "the given") -> None:
    """ConfigError unless ``1 <= ways <= len(classes)``; the message names the split and the fix."""
    if isinstance(ways, bool) or not isinstance(ways, (int, np.integer)) or ways < 1:
        raise ConfigError(f"ways={ways!r} must be a positive integer.")
    if ways > len(classes):
        shown = role.replace("_", "-")
        raise ConfigError(
            f"asked for {ways}-way tasks but {shown} classes are only {len(classes)} "
            f"({classes}); lower --ways or give more {shown} classes "
            f"(e.g. --{role.replace('_', '-')}-classes 0-{ways - 1})."
        )


def split_classes(
    num_classes: int,
    seed: int = 0,
    *,
    base: Iterable[int] | None = None,
    open_world: Iterable[int] | None = None,
    novel: Iterable[int] | None = None,
) -> ClassSplit:
    """Split ``num_classes`` class ids into base / open-world / novel.

    Without explicit lists: a seeded random split in the paper's proportions 64/16/20 (rounded,
    every class used; 100 classes give exactly 64/16/20), each list sorted. With any explicit
    list: the given lists are used as is and the roles not given are empty.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} must be a positive integer.")
    if base is None and open_world is None and novel is None:
        n_base = int(round(DEFAULT_PROPORTIONS[0] * num_classes))
        n_open = int(round(DEFAULT_PROPORTIONS[1] * num_classes))
        n_base = max(1, min(n_base, num_classes - 1)) if num_classes > 1 else 1
        n_open = max(0, min(n_open, num_classes - n_base - 1))
        perm = np.random.default_rng([seed, 31337]).permutation(num_classes).tolist()
        return ClassSplit(
            sorted(perm[:n_base]), sorted(perm[n_base : n_base + n_open]), sorted(perm[n_base + n_open :])
        )
    split = ClassSplit(list(base or []), list(open_world or []), list(novel or []))
    for role in ROLES:
        too_big = [c for c in getattr(split, role) if c >= num_classes]
        if too_big:
            raise ConfigError(f"{role} classes {too_big} do not exist: the dataset has classes 0..{num_classes - 1}.")
    return split


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_class_list(text: str) -> list[int]:
    """Parse ``"0-5,8,10-12"`` into ``[0, 1, 2, 3, 4, 5, 8, 10, 11, 12]`` (ranges inclusive).

    An empty string gives ``[]``. Bad syntax, descending ranges and duplicates raise ConfigError.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a class list must be a string like '0-5,8,10-12', got {text!r}.")
    if not text.strip():
        return []
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise ConfigError(
                f"cannot parse {part.strip()!r} in class list {text!r}; write ids and inclusive "
                "ranges separated by commas, e.g. '0-5,8,10-12'."
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"range {part.strip()!r} in class list {text!r} runs backwards; write it as {hi}-{lo}.")
        out.extend(range(lo, hi + 1))
    if len(set(out)) != len(out):
        dups = sorted({c for c in out if out.count(c) > 1})
        raise ConfigError(f"class list {text!r} names {dups} more than once; list every class once.")
    return out


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--split-seed``, ``--base-classes``, ``--open-world-classes``, ``--novel-classes`` to a parser."""
    group = parser.add_argument_group("class split")
    group.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the default 64/16/20%% base/open-world/novel split (default: 0)",
    )
    for role in ROLES:
        flag = role.replace("_", "-")
        group.add_argument(
            f"--{flag}-classes",
            default=None,
            metavar="IDS",
            help=f"explicit {role.replace('_', '-')} class ids, e.g. '0-5,8' "
            "(giving any list makes the roles not given empty)",
        )


def split_from_args(args: argparse.Namespace, num_classes: int) -> ClassSplit:
    """Build the :class:`ClassSplit` from arguments added by :func:`add_split_arguments`."""
    lists = {role: getattr(args, f"{role}_classes", None) for role in ROLES}
    explicit = {role: parse_class_list(text) for role, text in lists.items() if text is not None}
    if not explicit:
        return split_classes(num_classes, seed=getattr(args, "split_seed", 0))
    return split_classes(num_classes, **explicit)
