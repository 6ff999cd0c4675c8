"""What the example scripts share: flags derived from config dataclasses, and one-line errors.

* :func:`add_config_arguments` turns the fields of a config dataclass into command-line flags (in
  the spirit of transformers' ``HfArgumentParser``, with dashes in flag names, old flag names kept
  as aliases, and field types this project uses: ``X | None``, ``list[float]``, ``dict``...).
  A flag that is not given leaves the dataclass default in charge, so a script's defaults are
  the library's defaults and cannot drift; a field added to the dataclass becomes a flag.
* :func:`config_kwargs` reads back the fields the user gave.
* :class:`ArgumentParser` reports a bad flag value in one line (exit code 2).
* :func:`run_script` runs a script's ``main``: a project error (:class:`LearngeneError`), a full or
  read-only disk, memory exhausted or a Hub / network failure (:func:`environment_error`) becomes
  one line ``error: ...`` on stderr and exit code 2; ``--debug`` shows the traceback instead;
  ``--quiet`` hides the stage lines.
* :func:`make_accelerator` leaves accelerate in charge of mixed precision and warns when
  ``accelerate launch --num_processes N`` started one process; :func:`silence_progress_bars`
  is ``--no-progress`` for huggingface_hub, datasets and transformers.

This module only imports the standard library and :mod:`learngene_hf.errors` (the rest when a
function needs it), so a script builds its ``--help`` without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import re
import sys
import types
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import LearngeneError

__all__ = [
    "ArgumentParser",
    "add_config_arguments",
    "config_kwargs",
    "environment_error",
    "fewer_processes_than_launched",
    "given",
    "make_accelerator",
    "parse_class_ids",
    "parse_float_list",
    "parse_int_list",
    "parse_json",
    "run_script",
    "silence_progress_bars",
]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: ... (see --help)``, exit 2.

    It also adds ``--debug`` (show tracebacks) and ``--quiet`` (no stage lines), see
    :func:`run_script`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        self.add_argument(
            "--quiet", action="store_true", help="print no stage lines, only the results, warnings and errors"
        )

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------- value parsers
def parse_float_list(text: str) -> list[float]:
    """``"0.01,0.02"`` -> ``[0.01, 0.02]``; anything else raises an error that shows a valid value."""
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated finite numbers such as '0.01,0.02,0.05', got {text!r}"
        )
    return values


def parse_int_list(text: str) -> list[int]:
    """``"5,10"`` -> ``[5, 10]``; anything else raises an error that shows a valid value."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as '5,10', got {text!r}")
    return values


def parse_json(text: str, example: str = '{"num_classes": 20}') -> Any:
    """A JSON value; malformed JSON raises an error that shows ``example``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected JSON such as '{example}', got {text!r} ({err.msg})") from None


def parse_class_ids(text: str) -> list[int]:
    """``"0-5,8"`` -> ``[0, 1, 2, 3, 4, 5, 8]`` (:func:`learngene_hf.data.parse_class_list`, imported
    only when such a flag is given, so that ``--help`` stays light); a bad list raises an error
    that says how to write one."""
    from .data.splits import parse_class_list

    try:
        return parse_class_list(text)
    except LearngeneError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _scalar(kind: type) -> Callable[[str], Any]:
    example = {int: "5", float: "0.01"}.get(kind)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):  # inf / nan would train to chance level or overflow
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a finite number'} such as {example}, got {text!r}"
            )
        return value

    parse.__name__ = kind.__name__
    return parse


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _parser_for(tp: Any) -> Callable[[str], Any] | None:
    """The string -> value parser of a field type (``None``: a boolean switch)."""
    tp = _unwrap_optional(tp)
    if tp is bool:
        return None
    if tp in (int, float):
        return _scalar(tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        inner = (typing.get_args(tp) or (str,))[0]
        if inner is int:
            return parse_int_list
        if inner is float:
            return parse_float_list
        return lambda text: [x.strip() for x in text.split(",") if x.strip()]
    if origin is dict or tp is dict:
        return parse_json
    return str


def _doc_help(cls: type) -> dict[str, str]:
    """Per-field help from a Google-style ``Attributes:`` section (``name: text`` or ``a / b: text``,
    continued on more indented lines)."""
    out: dict[str, str] = {}
    entry = re.compile(r"^(\s*)(\w+(?:\s*/\s*\w+)*):\s+(\S.*)$")
    names: list[str] = []
    indent = -1
    for line in (cls.__doc__ or "").splitlines():
        m = entry.match(line)
        depth = len(line) - len(line.lstrip())
        if names and line.strip() and depth > indent and not (m and depth == indent):
            for name in names:
                out[name] += " " + line.strip()
            continue
        names = []
        if m:
            indent = depth
            names = [n.strip() for n in m.group(2).split("/")]
            for name in names:
                out.setdefault(name, m.group(3).strip())
            names = [n for n in names if out[n] == m.group(3).strip()]
    return out


def _plain(text: str) -> str:
    """Docstring markup as plain help text: ``:mod:`~a.b.c``` -> ``c``, ````x```` -> ``x``."""
    text = re.sub(r":\w+:`(~?)([^`]+)`", lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def add_config_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    negations: Mapping[str, Sequence[str]] | None = None,
    parsers: Mapping[str, Callable[[str], Any]] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    help: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    default_text: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (a parser or argument group).

    The flag of field ``num_tasks`` is ``--num-tasks``; a ``bool`` field gets ``--x`` / ``--no-x``.
    Flags that are not given are absent from the parsed namespace (read the given ones with
    :func:`config_kwargs`), so the dataclass default stays in charge.

    Args:
        exclude: fields that get no flag.
        aliases: extra flag names per field (e.g. old names kept working).
        negations: for a ``bool`` field, flags that set it to ``False`` (e.g. ``--keep-bn-stats``).
        parsers: string -> value functions overriding the one derived from the field type;
            raise ``argparse.ArgumentTypeError`` (or ``ValueError``) with a valid example.
        choices: allowed values per field (also read from ``field.metadata["choices"]``).
        help: help per field (also read from ``field.metadata["help"]`` or the class docstring).
        defaults: defaults shown and used for fields where the script differs from the
            dataclass (they then appear in the namespace).
        default_text: how a default is described in the help (e.g. "the preset's").

    Returns the names of the fields that got a flag.
    """
    aliases, negations, parsers = dict(aliases or {}), dict(negations or {}), dict(parsers or {})
    choices, help, defaults, default_text = (
        dict(choices or {}),
        dict(help or {}),
        dict(defaults or {}),
        dict(default_text or {}),
    )
    exclude = set(exclude)
    hints = typing.get_type_hints(cls)
    doc = _doc_help(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init or f.name.startswith("_"):
            continue
        meta = dict(f.metadata or {})
        if meta.get("flag") is False:
            continue
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        text = _plain(help.get(f.name) or meta.get("help") or doc.get(f.name) or "")
        shown = default_text.get(f.name) or _show(default)
        text = f"{text.rstrip('.')} (default: {shown})" if text else f"default: {shown}"
        text = text.replace("%", "%%")
        names = [_flag(f.name), *[a for a in aliases.get(f.name, ()) if a != _flag(f.name)]]
        keep = {"default": defaults[f.name]} if f.name in defaults else {"default": argparse.SUPPRESS}
        kind = parsers.get(f.name) or meta.get("parse") or _parser_for(hints.get(f.name, str))
        if kind is None:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, help=text, **keep)
            for neg in negations.get(f.name, ()):
                parser.add_argument(
                    neg,
                    dest=f.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=f"same as --no-{f.name.replace('_', '-')}",
                )
        else:
            options = choices.get(f.name) or meta.get("choices")
            metavar = None if options else f.name.upper()
            parser.add_argument(*names, dest=f.name, type=kind, choices=options, metavar=metavar, help=text, **keep)
        added.append(f.name)
    return added


def config_kwargs(args: argparse.Namespace, cls: type, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` that are set in ``args`` (given on the command line, or
    with a script default), as keyword arguments for ``cls(...)``."""
    exclude = set(exclude)
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in exclude and hasattr(args, f.name)
    }


def given(args: argparse.Namespace, name: str) -> bool:
    """Whether the flag of field ``name`` was given on the command line."""
    return hasattr(args, name)


def make_accelerator(mixed_precision: str | None = None, *, default: str = "auto", **kwargs: Any) -> Any:
    """An ``accelerate.Accelerator`` that leaves ``accelerate`` in charge of mixed precision.

    ``mixed_precision`` is the script's own flag: when given ("no", "fp16", "bf16" or "auto":
    bf16 on GPUs that support it, else fp16 on CUDA, "no" on CPU) it wins. When it is ``None``
    and ``accelerate launch --mixed_precision ...`` / ``ACCELERATE_MIXED_PRECISION`` / an
    accelerate config file chose a precision, that choice stands; only a plain ``python
    script.py`` falls back to ``default``. ``kwargs`` go to ``Accelerator``.
    """
    import os

    from accelerate import Accelerator

    from .training.config import resolve_mixed_precision

    if mixed_precision is None and os.environ.get("ACCELERATE_MIXED_PRECISION"):
        accelerator = Accelerator(**kwargs)
    else:
        accelerator = Accelerator(mixed_precision=resolve_mixed_precision(mixed_precision or default), **kwargs)
    if accelerator.num_processes == 1 and fewer_processes_than_launched():
        logging.getLogger(__name__).warning(
            "accelerate launch was asked for several processes (--num_processes) but this is the only one: with "
            "--cpu (or no GPU) it starts one process. For N processes on a CPU run: ACCELERATE_USE_CPU=1 "
            "accelerate launch --multi_gpu --num_processes N SCRIPT ..."
        )
    return accelerator


def fewer_processes_than_launched() -> bool:
    """Whether ``accelerate launch`` started this script alone although it was asked for several
    processes: its single-process launcher sets ``MASTER_ADDR`` / ``MASTER_PORT`` only for
    ``--num_processes`` > 1 (or several machines), and a real multi-process launch sets
    ``WORLD_SIZE``."""
    import os

    launched = "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_PORT" in os.environ
    return launched and int(os.environ.get("WORLD_SIZE", "1")) <= 1


def silence_progress_bars() -> None:
    """Hide the progress bars of huggingface_hub ("Fetching N files"), datasets and transformers
    (``--no-progress``; the library's own bars take ``progress=False``)."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    for module, name in (("datasets", "disable_progress_bars"), ("transformers.utils.logging", "disable_progress_bar")):
        try:
            getattr(importlib.import_module(module), name)()
        except ImportError:
            pass


def run_script(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> typing.NoReturn:
    """Run ``main(argv)`` and exit with its return value (``None``: 0).

    A :class:`~learngene_hf.errors.LearngeneError` (bad input that the library recognised) is
    printed as one line ``error: ...`` to stderr and exits with code 2, and so is a failure of the
    machine or the network (:func:`environment_error`: disk full, read-only folder, no permission,
    out of memory, a Hub or network error); with ``--debug`` in ``argv`` the traceback is shown.
    Other exceptions are bugs and keep their traceback.
    Ctrl-C prints ``interrupted`` and exits with code 130. The library's stage lines (INFO log
    records) are printed to stderr, unless ``--quiet`` is in ``argv`` (warnings still are).
    """
    from .logs import show_stage_lines

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    show_stage_lines(logging.WARNING if "--quiet" in argv else logging.INFO)
    try:
        code = main(argv)
    except LearngeneError as err:
        if debug:
            raise
        message = " ".join(str(err).split("\n")) or type(err).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the machine's and the network's failures, in one line
        message = environment_error(err)
        if debug or message is None:
            raise
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(int(code or 0))


#: Modules whose exceptions are the Hub's or the network's, not the library's.
_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3")


def environment_error(err: BaseException) -> str | None:
    """One line for a failure of the machine or the network that reached a script: a full or
    read-only disk, a missing permission, a file where a folder should be (``OSError``), memory
    exhausted (``MemoryError``, CUDA out of memory), a Hub or network error; ``None`` for anything
    else (a bug, which keeps its traceback)."""
    from .errors import os_error_message

    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    module = type(err).__module__ or ""
    if module.startswith(_NETWORK_MODULES) or isinstance(err, ConnectionError):
        return (
            f"the Hub request failed ({type(err).__name__}: {first_line}); check the endpoint (--hub-endpoint, "
            "HF_ENDPOINT), the repo id, the token and the network"
        )
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        where = "the GPU's" if type(err).__name__ == "OutOfMemoryError" else "this machine's"
        return (
            f"out of memory ({type(err).__name__}: {first_line[:200]}): the sizes asked for do not fit in {where} "
            "memory; use fewer or smaller images (--images-per-class, --image-size), a smaller --batch-size or a "
            "smaller --preset"
        )
    if isinstance(err, OSError) and err.errno is not None:
        return f"{os_error_message(err)}; free disk space, fix the permissions or choose another path"
    return None
