"""Logging of learngene-hf: stage lines go through ``accelerate.logging.get_logger``.

:func:`get_logger` returns accelerate's multi-process logger (a line is written once, by the main
process, unless ``main_process_only=False``); before any ``Accelerator`` exists (plain library
use) it logs through the standard logger of the same name instead of raising.

The library never configures handlers; :func:`show_stage_lines` (called by the example scripts)
prints the library's INFO lines, one line per message, to stderr.
"""

from __future__ import annotations

import functools
import logging
import sys

__all__ = ["get_logger", "show_stage_lines"]

_HANDLER_NAME = "learngene_hf.stage_lines"


@functools.cache
def _adapter_class() -> type:
    """accelerate's adapter that falls back to plain logging before any accelerate state exists,
    and writes accelerate's "[RANK i]" prefix only when there is more than one process (built on
    first use: importing this module does not import accelerate, and so not torch)."""
    from accelerate.logging import MultiProcessAdapter
    from accelerate.state import PartialState, is_initialized

    class _Adapter(MultiProcessAdapter):
        def log(self, level, msg, *args, **kwargs):  # noqa: ANN001 - logging's signature
            if is_initialized():
                return super().log(level, msg, *args, **kwargs)
            kwargs.pop("main_process_only", None)
            kwargs.pop("in_order", None)
            if self.isEnabledFor(level):
                kwargs.setdefault("stacklevel", 2)
                self.logger.log(level, msg, *args, **kwargs)
            return None

        def process(self, msg, kwargs):  # noqa: ANN001
            kwargs.setdefault("stacklevel", 2)
            state = PartialState()
            return (f"[RANK {state.process_index}] {msg}" if state.num_processes > 1 else msg), kwargs

    return _Adapter


def get_logger(name: str) -> logging.LoggerAdapter:
    """A logger for module ``name`` that is safe with and without ``accelerate`` processes."""
    return _adapter_class()(logging.getLogger(name), {})


def show_stage_lines(level: int = logging.INFO, stream=None) -> None:
    """Print learngene-hf's log lines of ``level`` and above as plain lines on ``stream`` (stderr).

    Calling it again only changes the level and stream (no duplicate lines)."""
    root = logging.getLogger("learngene_hf")
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
