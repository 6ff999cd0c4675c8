"""Writing and reading a learngene: the folder (``learngene.safetensors`` + ``learngene_config.json``
+ ``README.md``), the Hub push, and the validated load from a folder or a Hub repo.

Every function here works on plain pieces (a config and a dict of tensors, or an object with
``config`` / ``tensors``), so the :class:`~learngene_hf.artifact.learngene.Learngene` methods are
thin: :func:`save_folder`, :func:`push`, :func:`download` + :func:`load_folder`. Hub client errors
become :class:`~learngene_hf.errors.HubError` with what to do (:func:`hub_error`).

Only JSON and safetensors are read, never pickles.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError, ConfigError, HubError
from ..io import follow_umask
from ..logs import get_logger
from .card import learngene_card
from .config import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    LearngeneConfig,
    check_tensor_table,
    check_tensor_values,
)

logger = get_logger(__name__)


def safetensors_metadata(config: LearngeneConfig) -> dict[str, str]:
    """The ``learngene.safetensors`` header metadata (strings only): format, version, layers, contract, form."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(config.format_version),
        "layers": json.dumps(config.layer_names),
        "in_channels": str(config.in_channels),
        "out_channels": str(config.out_channels),
        "position": config.position,
        "form": config.form,
    }


def save_folder(
    learngene: Any,
    save_directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    model_card: bool = True,
    portable: bool = False,
) -> Path:
    """Write ``learngene.safetensors``, ``learngene_config.json`` and ``README.md`` to ``save_directory``.

    All files are first written to a temporary folder next to the target and then moved into
    place one by one, so an interrupted save never leaves a half-written file. ``repo_id`` is
    used in the model card's usage snippet. The config records the sha256 of the tensor file
    (``checksums``), verified on load. ``portable`` (for a push) keeps local paths out of the
    files (:func:`saved_config`). Returns the folder.
    """
    from safetensors.torch import save_file

    learngene.validate("learngene to save")
    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"{target} exists and is not a folder; choose another output directory.")
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in learngene.tensors.items()}
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata=safetensors_metadata(learngene.config))
        learngene.config.checksums = {WEIGHTS_NAME: file_sha256(staging / WEIGHTS_NAME)}
        data = saved_config(learngene.config, portable)
        (staging / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        names = [WEIGHTS_NAME, CONFIG_NAME]
        if model_card:
            shown = learngene
            if portable:  # the card tells what the pushed config says
                shown = copy.copy(learngene)
                shown.config = LearngeneConfig(**data)
            learngene_card(shown, repo_id=repo_id).save(staging / CARD_NAME)
            names.append(CARD_NAME)
        for name in names:
            follow_umask(staging / name)  # safetensors writes 0600 files
            os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def saved_config(config: LearngeneConfig, portable: bool = False) -> dict[str, Any]:
    """``config`` as written to ``learngene_config.json``. ``portable`` (a Hub push): no pushed file
    carries a path of the machine it was made on, nor names a folder for the puller's machine: the
    local ``source.run_dir`` becomes its folder name, ``source.run_name``, and any other absolute
    path (a local dataset folder, say) its last part."""
    data = config.to_dict()
    if not portable:
        return data
    source = dict(data.get("source") or {})
    if source.get("run_dir"):
        source["run_name"] = Path(str(source.pop("run_dir"))).name
    data["source"] = source
    return _without_absolute_paths(data)


def _without_absolute_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_absolute_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_absolute_paths(v) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
        return Path(value).name
    return value


def push(learngene: Any, repo_id: str, **options: Any) -> Any:
    """Create ``repo_id`` if needed and upload the learngene; ``options`` are the keywords of
    :meth:`Learngene.push_to_hub` (``revision``, ``private``, ``token``, ``commit_message``,
    ``create_pr``, ``endpoint``). Returns the :class:`huggingface_hub.CommitInfo`."""
    from huggingface_hub import HfApi

    revision, private = options.get("revision"), bool(options.get("private", False))
    commit_message = options.get("commit_message") or "Upload learngene"
    api = HfApi(endpoint=options.get("endpoint"), token=options.get("token"))
    with tempfile.TemporaryDirectory(prefix="learngene-push-") as folder:
        save_folder(learngene, folder, repo_id=repo_id, portable=True)  # validated before anything reaches the Hub
        created = False
        try:
            existed = api.repo_exists(repo_id)
            api.create_repo(repo_id, private=private, exist_ok=True)
            created = not existed
            if revision not in (None, "main"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message,
                create_pr=bool(options.get("create_pr", False)),
            )
        except Exception as err:  # noqa: BLE001 - translated below, others re-raised
            error = hub_error(err, repo_id, revision, pushing=True, endpoint=options.get("endpoint"))
            if created and isinstance(error, HubError):
                error = HubError(f"{error} {_remove_created_repo(api, repo_id)}")
            raise error from err


def _remove_created_repo(api: Any, repo_id: str) -> str:
    """Delete the repo a failed push created (it holds nothing of the learngene); say what happened."""
    try:
        api.delete_repo(repo_id)
    except Exception:  # noqa: BLE001 - the Hub may be gone by now: say how to remove it
        return (
            f"The push had created the repo {repo_id}, which is left empty: delete it with "
            f"HfApi(endpoint={api.endpoint!r}).delete_repo({repo_id!r}) (or `hf repo delete {repo_id}`)."
        )
    return f"The empty repo {repo_id} that the push had created was deleted again."


def download(repo_id: str, revision: str | None = None, **options: Any) -> Path:
    """The local snapshot folder of ``repo_id`` at ``revision`` (only the learngene's files),
    downloaded with ``snapshot_download`` unless cached.

    ``snapshot_download`` quietly falls back to the local cache, which is keyed by repo id only
    (so it may hold a copy from another server), when the endpoint does not answer: the endpoint is
    asked first, and the call fails (endpoint given) or says that the cache was used (default
    endpoint). A full commit sha is never asked for: its files never change. ``options``:
    ``token``, ``cache_dir``, ``force_download``, ``local_files_only``, ``endpoint`` (as
    :meth:`Learngene.from_pretrained` takes them).
    """
    token, cache_dir, endpoint = options.get("token"), options.get("cache_dir"), options.get("endpoint")
    force_download = bool(options.get("force_download", False))
    local_files_only = bool(options.get("local_files_only", False))
    from huggingface_hub import HfApi, snapshot_download

    unanswered = None
    if not local_files_only and not is_commit_sha(revision):
        try:
            HfApi(endpoint=endpoint).repo_info(repo_id, revision=revision, token=token)
        except Exception as err:  # noqa: BLE001 - translated below
            from huggingface_hub.utils import OfflineModeIsEnabled

            if isinstance(err, OfflineModeIsEnabled):  # HF_HUB_OFFLINE: the user chose the cache
                local_files_only = True
            elif is_bad_url(err) or not does_not_answer(err):
                raise hub_error(err, repo_id, revision, endpoint=endpoint) from err
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
                repo_id,
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
            raise HubError(
                f"The Hub at {unanswered} does not answer, and {repo_id}@{revision or 'main'} is not in the "
                "local cache; check the network or HF_ENDPOINT."
            ) from err
        raise hub_error(err, repo_id, revision) from err
    if unanswered:
        logger.warning(
            f"The Hub at {unanswered} does not answer: loaded {repo_id}@{revision or 'main'} from the local cache, "
            f"commit {folder.name} (the cache does not record which server it came from)."
        )
    return folder


def load_folder(folder: Path, where: str, hub: bool = False) -> tuple[LearngeneConfig, dict[str, torch.Tensor]]:
    """Read and validate a learngene folder: ``(config, tensors)``. ``where`` names it in errors;
    ``hub`` says how to fix a bad file (re-download instead of re-save).

    Checks the config's fields (no unknown ones, the right types), the format and its version,
    the channel contract, the safetensors metadata, that tensor names, shapes and dtypes match
    the config, the tensor file's sha256 (where the config records one) and the values (finite,
    non-negative BatchNorm variances); raises :class:`ArtifactError` naming every mismatch.
    """
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
        raise ArtifactError(
            f"{where}: {CONFIG_NAME} is not valid JSON ({err}); it is truncated or corrupt, {redo}."
        ) from err
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: {CONFIG_NAME} does not hold a JSON object; {redo}.")
    config = LearngeneConfig.from_dict(data, f"{where}: {CONFIG_NAME}")
    config.validate(f"{where}: {CONFIG_NAME}")
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            table = {}
            for name in handle.keys():
                piece = handle.get_slice(name)
                table[name] = (tuple(piece.get_shape()), DTYPES.get(piece.get_dtype(), piece.get_dtype()))
            check_metadata(metadata, config, f"{where}: {WEIGHTS_NAME}")
            check_tensor_table(table, config, f"{where}: {WEIGHTS_NAME}")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as err:
        raise ArtifactError(f"{where}: {WEIGHTS_NAME} is truncated or corrupt ({err}); {redo}.") from err
    recorded = config.checksums.get(WEIGHTS_NAME)  # absent from learngenes saved before checksums existed
    if recorded is not None and file_sha256(weights_path) != recorded:
        raise ArtifactError(
            f"{where}: {WEIGHTS_NAME} does not match the sha256 recorded in {CONFIG_NAME}: the tensor file was "
            f"changed or damaged after it was saved; {redo}."
        )
    check_tensor_values(tensors, f"{where}: {WEIGHTS_NAME}")
    return config, tensors


DTYPES = {
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


def check_metadata(metadata: dict[str, str], config: LearngeneConfig, where: str) -> None:
    if metadata.get("format") != FORMAT_NAME:
        raise ArtifactError(
            f"{where} has safetensors metadata format {metadata.get('format')!r}, not {FORMAT_NAME!r}: it was not "
            "written "
            "by learngene-hf. Re-save the learngene with Learngene.save_pretrained."
        )
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ArtifactError(f"{where} has no readable format_version in its metadata; re-save the learngene.") from None
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where} uses format version {version}, newer than supported ({FORMAT_VERSION}); upgrade learngene-hf."
        )
    form = metadata.get("form", "layers")  # files written before forms existed hold layers
    if form != config.form:
        raise ArtifactError(
            f"{where} holds a {form!r} learngene but {CONFIG_NAME} describes a {config.form!r} one: the two files come "
            "from "
            "different learngenes. Keep the two files from the same save (re-save or re-download both)."
        )
    if "layers" in metadata:
        try:
            names = json.loads(metadata["layers"])
        except json.JSONDecodeError:
            raise ArtifactError(
                f"{where}: the 'layers' metadata is not JSON; the file is corrupt, re-save the learngene."
            ) from None
        if names != config.layer_names:
            raise ArtifactError(
                f"{where} holds layers {names} but {CONFIG_NAME} describes {config.layer_names}: the config does not "
                "match "
                "the tensors. Keep the two files from the same save (re-save or re-download both)."
            )


def is_commit_sha(revision: str | None) -> bool:
    """A full 40-hex commit sha: its files never change, so a cached copy is the same everywhere."""
    return revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def is_bad_url(err: Exception) -> bool:
    """Whether a Hub client error means the endpoint is not a usable URL (no http:// or https://...)."""
    return bool({cls.__name__ for cls in type(err).__mro__} & {"UnsupportedProtocol", "InvalidURL"})


def does_not_answer(err: Exception) -> bool:
    """Whether a Hub client error means the server did not answer (no connection, timeout, 5xx)."""
    from huggingface_hub import errors as hub_errors

    names = {cls.__name__ for cls in type(err).__mro__}
    if names & {"TransportError", "ConnectionError", "Timeout", "TimeoutError"}:
        return True
    status = getattr(getattr(err, "response", None), "status_code", None)
    return isinstance(err, hub_errors.HfHubHTTPError) and isinstance(status, int) and status >= 500


def hub_error(
    err: Exception, repo_id: str, revision: str | None, pushing: bool = False, endpoint: str | None = None
) -> Exception:
    """Translate a huggingface_hub or network exception into a :class:`HubError` that says what to
    do (``endpoint``: the Hub's URL as given, ``None`` for the default)."""
    from huggingface_hub import errors as hub_errors

    if isinstance(err, (ArtifactError, ConfigError, HubError)):
        return err
    rev = revision or "main"
    where = f"the Hub at {endpoint}" if endpoint else "the Hub (HF_ENDPOINT)"
    if isinstance(err, hub_errors.HFValidationError):
        return HubError(f"{repo_id!r} is not a valid Hub repo id ({err}); use 'namespace/name'.")
    if is_bad_url(err):
        return HubError(f"The Hub endpoint {endpoint!r} is not a URL ({err}); give one like http://127.0.0.1:8080.")
    if does_not_answer(err):
        return HubError(
            f"{where[0].upper()}{where[1:]} does not answer ({type(err).__name__}: {err}); start it or correct the "
            "endpoint (--hub-endpoint, HF_ENDPOINT), and check the network."
        )
    if isinstance(err, hub_errors.GatedRepoError):
        return HubError(
            f"{repo_id} is a gated repo: accept its conditions on the Hub page, then pass token=... "
            "(or log in with `hf auth login`)."
        )
    if isinstance(err, hub_errors.RevisionNotFoundError):
        return HubError(
            f"Revision {rev!r} does not exist in {repo_id}; check the branch, tag or commit sha (the default is "
            "'main')."
        )
    if isinstance(err, hub_errors.RepositoryNotFoundError):
        return HubError(
            f"Repo {repo_id} was not found on the Hub (nor as a local folder), or it is private and no valid token "
            "was given. Check the repo id / path, "
            "or pass token=... (or log in with `hf auth login`) for a private repo."
        )
    if isinstance(err, (hub_errors.EntryNotFoundError, hub_errors.RemoteEntryNotFoundError)):
        return HubError(
            f"{repo_id}@{rev} lacks a learngene file ({err}); is it a learngene repo? Push one with "
            "Learngene.push_to_hub."
        )
    if isinstance(err, hub_errors.LocalEntryNotFoundError):
        return HubError(
            f"{repo_id}@{rev} is not in the local cache and the Hub could not be reached; check the network / "
            "HF_ENDPOINT, "
            "or drop local_files_only / HF_HUB_OFFLINE."
        )
    if isinstance(err, hub_errors.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            action = "write access (a token with write permission)" if pushing else "access"
            return HubError(
                f"The Hub refused {action} to {repo_id} (HTTP {status}); pass token=... with the right permissions."
            )
        return HubError(
            f"The Hub request for {repo_id}@{rev} failed ({err}); check the repo id, the token and the endpoint."
        )
    if type(err).__module__.startswith(("huggingface_hub", "httpx", "httpcore")):
        return HubError(
            f"The Hub request for {repo_id}@{rev} at {where} failed ({type(err).__name__}: {err}); check the "
            "endpoint, the repo id and the token."
        )
    return err
