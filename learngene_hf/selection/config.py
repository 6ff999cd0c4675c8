"""How a learngene's layers are chosen: the selection settings and names (a light module).

:class:`SelectionConfig` holds the settings of :meth:`learngene_hf.selection.inheritor.Inheritor.select`
(``examples/extract_learngene.py`` derives its flags from its fields); :data:`CRITERIA` and
:data:`STRATEGIES` are the criterion and strategy names of :mod:`learngene_hf.selection.criterion`,
with :data:`DEFAULT_CRITERION`, :data:`DEFAULT_K` and the paper's gradient threshold
:data:`PAPER_THRESHOLD`; :func:`parse_layers` reads a ``"10-12"`` layer list. At module level this
imports only the standard library and :mod:`learngene_hf.errors`, so the example scripts can build
their ``--help`` before any heavy import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import ConfigError

#: Criterion names accepted by :func:`~learngene_hf.selection.criterion.layer_scores`.
CRITERIA: tuple[str, ...] = ("paper", "relative_activity", "stability", "weight_change")
#: Selection strategies accepted by :func:`~learngene_hf.selection.criterion.select_layers` / ``Inheritor.select``.
STRATEGIES: tuple[str, ...] = ("validated", "criterion", "paper", "layers")
#: The paper's gradient threshold on CIFAR.
PAPER_THRESHOLD = 5e-10
DEFAULT_CRITERION = "stability"
DEFAULT_K = 3

#: Learning rates every candidate is probed with (its best one counts): a single small rate
#: under-trains 30-step probes and would rank candidates by how fast they start, not how well.
DEFAULT_PROBE_LRS: tuple[float, ...] = (0.02, 0.05)
#: Largest share of the collective model's parameters a validated learngene may hold.
DEFAULT_MAX_FRACTION = 1 / 3


@dataclass
class SelectionConfig:
    """How :meth:`~learngene_hf.selection.inheritor.Inheritor.select` chooses the learngene
    (``examples/extract_learngene.py`` derives its flags from these fields; ``select``'s keyword
    defaults are these defaults).

    Attributes:
        strategy: validated (open-world probes of candidate blocks), criterion (best block by
            the criterion), paper (the last k layers), or layers (an explicit list).
        k: layers per learngene.
        criterion: ranking criterion: paper, relative_activity, stability or weight_change.
        layers: explicit layer indices (implies the 'layers' strategy).
        threshold: absolute gradient threshold of the 'paper' criterion (None: 5e-10).
        from_task: rank on tasks with this id or later only (None: all tasks).
        top: blocks of the criterion ranking that become validated candidates.
        probe_episodes: open-world probe episodes per candidate.
        probe_epochs: epochs of each probe.
        probe_ways: ways of each probe episode (capped at the open-world classes).
        probe_shots: shots of each probe episode.
        probe_queries: query images per class of each probe episode.
        probe_lrs: learning rates each candidate is probed with; its best counts.
        max_fraction: skip candidates holding more than this share of the collective model's
            parameters (None or 0: no cap).
        seed: seed of the probe episodes and models.
        max_bytes: a budget of inherited bytes: instead of a block of k full-width layers, choose
            on the same probes among the first d layers of every depth at the widest width that
            fits (:meth:`~learngene_hf.selection.inheritor.Inheritor.select_under_budget`).
        distill_epochs: with max_bytes, also distill each narrowed candidate from the collective
            model for this many epochs on the base classes (0: no distilled candidates).
    """

    strategy: str = "validated"
    k: int = DEFAULT_K
    criterion: str = DEFAULT_CRITERION
    layers: list[int] | None = None
    threshold: float | None = None
    from_task: int | None = None
    top: int = 2
    probe_episodes: int = 4
    probe_epochs: int = 30
    probe_ways: int = 5
    probe_shots: int = 5
    probe_queries: int = 15
    probe_lrs: tuple[float, ...] = DEFAULT_PROBE_LRS
    max_fraction: float | None = DEFAULT_MAX_FRACTION
    seed: int = 0
    max_bytes: int | None = None
    distill_epochs: int = 0

    def __post_init__(self) -> None:
        """Refuse settings that would be ignored or fail late (one line naming the flag)."""
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not one of {list(STRATEGIES)} (--strategy).")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"criterion {self.criterion!r} is not one of {list(CRITERIA)} (--criterion).")
        for name in ("k", "top", "probe_episodes", "probe_epochs", "probe_ways", "probe_shots", "probe_queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer (--{name.replace('_', '-')}), got {value!r}.")
        if self.probe_ways < 2:
            raise ConfigError(
                f"probe_ways must be at least 2 (--probe-ways): 1-way probes score 100%, got {self.probe_ways}."
            )
        if not self.probe_lrs or not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in self.probe_lrs
        ):
            raise ConfigError(f"probe_lrs must be positive finite numbers (--probe-lrs), got {self.probe_lrs!r}.")
        if self.max_fraction is not None and not (
            isinstance(self.max_fraction, (int, float)) and 0 <= self.max_fraction <= 1
        ):
            raise ConfigError(
                f"max_fraction must be a share between 0 and 1 (0: no cap) (--max-fraction), got {self.max_fraction!r}."
            )
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ConfigError(f"threshold must be a positive number (--threshold), got {self.threshold!r}.")
        if self.from_task is not None and self.from_task < 0:
            raise ConfigError(f"from_task must be 0 or more (--from-task), got {self.from_task!r}.")
        if self.max_bytes is not None and (isinstance(self.max_bytes, bool) or self.max_bytes < 1):
            raise ConfigError(f"max_bytes must be a positive number of bytes (--max-bytes), got {self.max_bytes!r}.")
        if self.max_bytes is not None and (self.layers is not None or self.strategy != "validated"):
            raise ConfigError("--max-bytes chooses the layers on open-world probes; drop --layers / --strategy.")
        if self.distill_epochs < 0 or (self.distill_epochs and self.max_bytes is None):
            raise ConfigError(
                f"distill_epochs must be 0 or more and needs --max-bytes (--distill-epochs), got "
                f"{self.distill_epochs!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_layers(text: str | Sequence[int]) -> list[int]:
    """``"10-12"`` / ``"10,11,12"`` / ``[10, 11, 12]`` -> ``[10, 11, 12]``."""
    if not isinstance(text, str):
        return [int(i) for i in text]
    out: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError as err:
        raise ConfigError(f"Cannot read layers {text!r}; write them like '10-12' or '10,11,12'.") from err
    return out
