"""Model card metadata checks of the local Hub (:mod:`learngene_hf.testing.hub`).

:func:`validate_card_metadata` checks a ``README.md``'s YAML front matter like the Hub's
``/api/validate-yaml`` (the request handler, :mod:`learngene_hf.testing.hub_handler`, runs it on
every commit that holds a README); :func:`card_data` reads the front matter for the repo info.
Only the standard library and PyYAML (a dependency of ``huggingface_hub``, imported when called)
are used.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["validate_card_metadata", "card_data"]

_YAML_BLOCK_RE = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """Check a model card's YAML front matter like the Hub's ``/api/validate-yaml``.

    Args:
        content: the full ``README.md`` text.

    Returns:
        ``(errors, warnings)``: lists of messages. The card is valid when ``errors`` is empty.
        Rules: the front matter must be a YAML mapping; ``license``, ``library_name`` and
        ``pipeline_tag`` strings; ``tags`` a list of strings; ``base_model``, ``datasets``,
        ``language`` and ``metrics`` a string or a list of strings.
    """
    import yaml  # dependency of huggingface_hub

    match = _YAML_BLOCK_RE.search(content)
    if match is None:
        return [], [
            "Empty or missing yaml metadata in repo card "
            "(https://huggingface.co/docs/hub/model-cards#model-card-metadata)"
        ]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the card's front matter: {err}"], []
    if data is None:
        return [], ["Empty yaml metadata in repo card"]
    if not isinstance(data, dict):
        return [f"The card's front matter must be a YAML mapping (key: value), got {type(data).__name__}"], []

    errors: list[str] = []

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    for key in ("license", "library_name", "pipeline_tag"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string, got {type(data[key]).__name__}: {data[key]!r}')
    if "tags" in data and not is_str_list(data["tags"]):
        errors.append(f'"tags" must be a list of strings, got {data["tags"]!r}')
    for key in ("base_model", "datasets", "language", "metrics"):
        if key in data and not (isinstance(data[key], str) or is_str_list(data[key])):
            errors.append(f'"{key}" must be a string or a list of strings, got {data[key]!r}')
    return errors, []


def card_data(content: bytes) -> dict | None:
    """The front matter of a README as a dict, or None when missing or unreadable."""
    import yaml

    match = _YAML_BLOCK_RE.search(content.decode("utf-8", errors="replace"))
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None
