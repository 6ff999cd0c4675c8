"""Exceptions raised by learngene-hf.

Every error says what is wrong and what to do about it. They all derive from
:class:`LearngeneError`, so callers can catch the whole family at once.
"""

from __future__ import annotations


class LearngeneError(Exception):
    """Base class of every error raised on purpose by learngene-hf."""


class ConfigError(LearngeneError, ValueError):
    """A configuration value or argument is invalid (bad width, layer index, label count...)."""


class DataError(LearngeneError, ValueError):
    """A dataset cannot be used as asked (missing column, too few images, bad class split...)."""


class ArtifactError(LearngeneError):
    """A saved learngene or run folder is missing files, corrupt, or inconsistent."""


class IncompatibleLearngeneError(LearngeneError, ValueError):
    """A learngene does not fit the model it should initialize (channel contract, shapes)."""


class HubError(LearngeneError):
    """A Hub operation failed: missing repo, unknown revision, gated or private repo..."""


def os_error_message(err: OSError) -> str:
    """What an ``OSError`` means for the user, in a few words: ``"the disk is full"``,
    ``"read-only file system"``, ``"permission denied"``, ``"a file is in the way of a folder"``...,
    with the path when the error names one."""
    import errno

    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOTDIR: "a file is in the way of a folder",
        errno.EEXIST: "a file is in the way",
        errno.EISDIR: "a folder is in the way of a file",
        errno.ENOENT: "no such file or folder",
    }
    reason = reasons.get(err.errno, err.strerror or type(err).__name__)
    return f"{reason}: {err.filename}" if err.filename else reason
