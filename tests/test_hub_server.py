"""The local Hub-protocol server, exercised with the real huggingface_hub and transformers clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, ModelCardData, hf_hub_download, metadata_update, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from learngene_hf.auto import from_learngene
from learngene_hf.errors import HubError
from learngene_hf.testing.hub import LocalHubServer, local_hub
from learngene_hf.testing.hub_cards import validate_card_metadata

HUB_TEST_TOKEN = "hf_test_alice"  # user "alice" on the hub and hub_with_tokens servers (tests/conftest.py)
TOKENS = {"hf_alice": "alice"}  # for the servers these tests start themselves
REPO_ROOT = Path(__file__).resolve().parents[1]


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


# -- push and pull by branch, tag, commit sha --------------------------------------------------


def test_download_by_branch_tag_and_sha_returns_the_bytes_of_that_revision(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/versions")
    first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="weights.bin", repo_id="org/versions")
    api.create_tag("org/versions", tag="v1")
    api.create_branch("org/versions", branch="stable")
    second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="weights.bin", repo_id="org/versions")

    assert first.oid != second.oid and len(first.oid) == 40
    assert _read(hf_hub_download("org/versions", "weights.bin")) == b"version 2"
    assert _read(hf_hub_download("org/versions", "weights.bin", revision="main")) == b"version 2"
    assert _read(hf_hub_download("org/versions", "weights.bin", revision="v1")) == b"version 1"
    assert _read(hf_hub_download("org/versions", "weights.bin", revision="stable")) == b"version 1"
    assert _read(hf_hub_download("org/versions", "weights.bin", revision=first.oid)) == b"version 1"
    assert api.model_info("org/versions").sha == second.oid
    assert api.model_info("org/versions", revision="v1").sha == first.oid

    refs = api.list_repo_refs("org/versions")
    assert {(b.name, b.target_commit) for b in refs.branches} == {("main", second.oid), ("stable", first.oid)}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", first.oid)]
    titles = [c.title for c in api.list_repo_commits("org/versions")]
    assert titles[-1] == "initial commit" and len(titles) == 3


def test_commit_to_a_branch_leaves_main_alone(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/branches")
    api.upload_file(path_or_fileobj=b"main", path_in_repo="f.txt", repo_id="org/branches")
    api.create_branch("org/branches", branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id="org/branches", revision="dev")

    assert _read(hf_hub_download("org/branches", "f.txt", revision="dev")) == b"dev"
    assert _read(hf_hub_download("org/branches", "f.txt")) == b"main"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch("org/branches", branch="dev")
    assert err.value.response.status_code == 409
    api.create_branch("org/branches", branch="dev", exist_ok=True)


def test_snapshot_download_of_an_old_sha_has_the_old_files_only(hub: str, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo("org/snap")
    folder = tmp_path / "model"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub dir" / "w.bin").write_bytes(bytes(range(256)) * 10)
    first = api.upload_folder(folder_path=folder, repo_id="org/snap")
    api.upload_file(path_or_fileobj=b"late", path_in_repo="late.txt", repo_id="org/snap")

    old = Path(snapshot_download("org/snap", revision=first.oid))
    new = Path(snapshot_download("org/snap"))
    assert (old / "sub dir" / "w.bin").read_bytes() == bytes(range(256)) * 10
    assert json.loads((old / "config.json").read_text()) == {"a": 1}
    assert not (old / "late.txt").exists()
    assert (new / "late.txt").read_bytes() == b"late"
    assert sorted(api.list_repo_files("org/snap")) == [".gitattributes", "config.json", "late.txt", "sub dir/w.bin"]
    tree = {e.path: type(e).__name__ for e in api.list_repo_tree("org/snap", recursive=True)}
    assert tree["sub dir"] == "RepoFolder" and tree["sub dir/w.bin"] == "RepoFile"
    assert [e.path for e in api.list_repo_tree("org/snap", path_in_repo="sub dir")] == ["sub dir/w.bin"]
    expanded = {e.path: e for e in api.list_repo_tree("org/snap", recursive=True, expand=True)}
    assert expanded["late.txt"].last_commit.title == "Upload late.txt with huggingface_hub"
    assert expanded["config.json"].last_commit.oid == first.oid
    infos = api.get_paths_info("org/snap", ["config.json", "sub dir", "absent"], revision=first.oid)
    assert [(i.path, type(i).__name__) for i in infos] == [("config.json", "RepoFile"), ("sub dir", "RepoFolder")]


def test_datasets_load_dataset_reads_a_dataset_repo(hub: str, tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"x": [1, 2, 3], "label": [0, 1, 0]}).to_parquet(tmp_path / "train.parquet")
    api = HfApi()
    api.create_repo("org/tiny-data", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=tmp_path / "train.parquet",
        path_in_repo="data/train-00000-of-00001.parquet",
        repo_id="org/tiny-data",
        repo_type="dataset",
    )
    loaded = datasets.load_dataset("org/tiny-data", split="train", cache_dir=str(tmp_path / "ds_cache"))
    assert loaded["x"][:] == [1, 2, 3] and loaded.column_names == ["x", "label"]


def test_unchanged_file_upload_makes_no_new_commit(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/same")
    first = api.upload_file(path_or_fileobj=b"same", path_in_repo="f.txt", repo_id="org/same")
    again = api.upload_file(path_or_fileobj=b"same", path_in_repo="f.txt", repo_id="org/same")
    assert again.oid == first.oid
    assert len(api.list_repo_commits("org/same")) == 2


def test_stale_parent_commit_is_refused(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/race")
    base = api.model_info("org/race").sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="f.txt", repo_id="org/race")
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"2", path_in_repo="f.txt", repo_id="org/race", parent_commit=base)
    assert err.value.response.status_code == 412


def test_create_pr_commits_to_a_pr_ref(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/pr")
    info = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="f.txt", repo_id="org/pr", create_pr=True)
    assert info.pr_revision == "refs/pr/1"
    assert _read(hf_hub_download("org/pr", "f.txt", revision="refs/pr/1")) == b"proposal"
    assert not api.file_exists("org/pr", "f.txt")


def test_delete_file_and_delete_repo(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/gone")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="a/x.txt", repo_id="org/gone")
    api.delete_file("a/x.txt", repo_id="org/gone")
    assert not api.file_exists("org/gone", "a/x.txt")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("a/x.txt", repo_id="org/gone")
    api.delete_repo("org/gone")
    assert not api.repo_exists("org/gone")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo("org/gone")
    api.delete_repo("org/gone", missing_ok=True)


# -- errors the client maps to exceptions ------------------------------------------------------


def test_missing_repo_raises_repository_not_found(hub: str) -> None:
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nothing-here", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/nothing-here")
    assert not HfApi().repo_exists("org/nothing-here")


def test_missing_revision_raises_revision_not_found(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/revs")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/revs", ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/revs", ".gitattributes", revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download("org/revs", revision="no-such-branch")
    assert not api.revision_exists("org/revs", "no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="org/revs", revision="no-such-branch")


def test_missing_file_raises_entry_not_found(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/files")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="org/files")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/files", "model.safetensors")
    assert api.file_exists("org/files", "config.json")
    assert not api.file_exists("org/files", "model.safetensors")


# -- private, gated, tokens --------------------------------------------------------------------


def test_private_repo_needs_a_token(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/secret", private=True, token=HUB_TEST_TOKEN)
    api.upload_file(path_or_fileobj=b"hidden", path_in_repo="f.txt", repo_id="org/secret", token=HUB_TEST_TOKEN)

    # without a token first: once cached, a failed request falls back to the cached copy
    with pytest.raises(RepositoryNotFoundError) as err:
        hf_hub_download("org/secret", "f.txt", token=False)
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/secret", token=False)
    assert not api.repo_exists("org/secret", token=False)
    assert _read(hf_hub_download("org/secret", "f.txt", token=HUB_TEST_TOKEN)) == b"hidden"
    assert api.model_info("org/secret", token=HUB_TEST_TOKEN).private is True


def test_configured_tokens_decide_who_reads_and_writes(hub_with_tokens: str) -> None:
    alice = HfApi(token=HUB_TEST_TOKEN)
    bob = HfApi(token="hf_test_bob")
    assert alice.whoami()["name"] == "alice"
    alice.create_repo("alice/private-model", private=True)
    alice.create_repo("alice/public-model")
    alice.upload_file(path_or_fileobj=b"a", path_in_repo="f.txt", repo_id="alice/private-model")

    with pytest.raises(RepositoryNotFoundError):  # bob may not even see it
        bob.model_info("alice/private-model")
    with pytest.raises(HfHubHTTPError) as err:  # a token the server does not know
        HfApi(token="hf_wrong").model_info("alice/public-model")
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError) as err:  # public repo, but only its owner writes
        bob.upload_file(path_or_fileobj=b"b", path_in_repo="f.txt", repo_id="alice/public-model")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:  # this server wants a token to create repos
        HfApi(token=False).create_repo("anon/model")
    assert err.value.response.status_code == 401
    assert bob.create_repo("bob-model").repo_id == "bob/bob-model"  # no namespace: the token's user


def test_anonymous_writes_are_refused_by_default(hub: str) -> None:
    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo("org/anonymous")
    assert err.value.response.status_code == 401 and "authenticated" in str(err.value)
    HfApi().create_repo("org/kept")  # alice (HF_TOKEN)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id="org/kept")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError):
        anonymous.delete_repo("org/kept")
    assert HfApi().repo_exists("org/kept") and not HfApi().file_exists("org/kept", "f.txt")


def test_a_token_writes_only_to_its_namespaces(hub_with_tokens: str, tmp_path: Path) -> None:
    alice, bob = HfApi(token=HUB_TEST_TOKEN), HfApi(token="hf_test_bob")
    alice.create_repo("alice/lg")
    alice.upload_file(path_or_fileobj=b"alice's", path_in_repo="f.txt", repo_id="alice/lg")
    for attempt in (
        lambda: bob.create_repo("alice/new"),
        lambda: bob.create_repo("team/lg"),  # nobody's namespace: still not bob's
        lambda: bob.upload_file(path_or_fileobj=b"bob's", path_in_repo="f.txt", repo_id="alice/lg"),
        lambda: bob.create_branch("alice/lg", branch="mine"),
        lambda: bob.create_tag("alice/lg", tag="v1"),
        lambda: bob.update_repo_settings("alice/lg", private=True),
        lambda: bob.delete_repo("alice/lg"),
    ):
        with pytest.raises(HfHubHTTPError) as err:
            attempt()
        assert err.value.response.status_code == 403, err.value
    assert "may write to bob/* only" in str(err.value)
    assert _read(hf_hub_download("alice/lg", "f.txt", cache_dir=tmp_path / "c", token=False)) == b"alice's"
    with pytest.raises(HfHubHTTPError) as err:  # exist_ok does not turn the refusal into a success
        bob.create_repo("alice/lg", exist_ok=True)
        bob.upload_file(path_or_fileobj=b"bob's", path_in_repo="f.txt", repo_id="alice/lg")
    assert err.value.response.status_code == 403


def test_a_granted_namespace_is_shared_by_its_members(tmp_path: Path) -> None:
    tokens = {"hf_alice": "alice", "hf_bob": "bob", "hf_carol": "carol"}
    grants = {"alice": ["team"], "bob": ["team"]}
    with local_hub(tmp_path, tokens=tokens, grants=grants) as endpoint:
        alice, bob, carol = (HfApi(endpoint=endpoint, token=t) for t in tokens)
        alice.create_repo("team/lg", private=True)
        bob.upload_file(path_or_fileobj=b"bob's", path_in_repo="f.txt", repo_id="team/lg")
        assert alice.file_exists("team/lg", "f.txt")
        assert bob.whoami()["orgs"] == [{"name": "team"}]
        with pytest.raises(RepositoryNotFoundError):  # private: carol does not even see it
            carol.model_info("team/lg")
        with pytest.raises(HfHubHTTPError) as err:
            carol.upload_file(path_or_fileobj=b"carol's", path_in_repo="f.txt", repo_id="team/lg")
        assert err.value.response.status_code in (403, 404)


def test_a_private_repo_is_invisible_to_another_token_and_to_unknown_ones(hub_with_tokens: str) -> None:
    alice, bob, mallory = HfApi(token=HUB_TEST_TOKEN), HfApi(token="hf_test_bob"), HfApi(token="mallory")
    alice.create_repo("alice/secret", private=True)
    alice.upload_file(path_or_fileobj=b"s", path_in_repo="f.txt", repo_id="alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info("alice/secret")
    assert not bob.repo_exists("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/secret", "f.txt", token="hf_test_bob")
    with pytest.raises(HfHubHTTPError) as err:  # creating it again does not reveal that it exists
        bob.create_repo("alice/secret", private=True)
    assert err.value.response.status_code == 403 and "already" not in str(err.value)
    for attempt in (
        lambda: mallory.model_info("alice/secret"),
        lambda: mallory.upload_file(path_or_fileobj=b"m", path_in_repo="f.txt", repo_id="alice/secret"),
        lambda: mallory.delete_repo("alice/secret"),
    ):
        with pytest.raises(HfHubHTTPError) as err:
            attempt()
        assert err.value.response.status_code == 401 and "does not know the token" in str(err.value)
    assert alice.model_info("alice/secret").private is True
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).create_repo("anon/secret", private=True)
    assert err.value.response.status_code == 401


def test_anonymous_writes_are_an_opt_in_that_never_reaches_a_token_users_namespace(tmp_path: Path) -> None:
    with local_hub(tmp_path, tokens=TOKENS, allow_anonymous_writes=True) as endpoint:
        anonymous, alice = HfApi(endpoint=endpoint, token=False), HfApi(endpoint=endpoint, token="hf_alice")
        anonymous.create_repo("scratch/lg")
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id="scratch/lg")
        alice.create_repo("alice/lg")
        with pytest.raises(HfHubHTTPError) as err:
            anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id="alice/lg")
        assert err.value.response.status_code == 401
        with pytest.raises(HfHubHTTPError):
            anonymous.create_repo("alice/other")
        alice.create_repo("shared/owned")  # created by alice: hers, though the namespace is nobody's
        with pytest.raises(HfHubHTTPError):
            anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id="shared/owned")


def test_the_server_refuses_other_interfaces_without_tokens_and_reads_a_tokens_file(tmp_path: Path, capsys) -> None:
    from learngene_hf.testing.hub import main, read_tokens_file

    with pytest.raises(HubError, match="Refusing to serve on 0.0.0.0 without tokens"):
        LocalHubServer(tmp_path, host="0.0.0.0")
    assert main(["--root", str(tmp_path / "r"), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "Refusing to serve on 0.0.0.0" in capsys.readouterr().err
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"hf_a": "alice", "hf_b": {"user": "bob", "namespaces": ["team"]}}))
    assert read_tokens_file(tokens_file) == ({"hf_a": "alice", "hf_b": "bob"}, {"alice": [], "bob": ["team"]})
    tokens_file.write_text(json.dumps({"hf_a": {"name": "alice"}}))
    with pytest.raises(HubError, match="tokens.json: the entry of token hf_a"):
        read_tokens_file(tokens_file)
    with pytest.raises(HubError, match="grants must map"):
        LocalHubServer(tmp_path, tokens=TOKENS, grants={"alice": "team"})


def test_gated_repo_serves_files_only_with_a_token(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/gated")
    api.upload_file(path_or_fileobj=b"g", path_in_repo="f.txt", repo_id="org/gated")
    api.update_repo_settings("org/gated", gated="auto")

    assert api.model_info("org/gated").gated == "auto"
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "f.txt", token=False)
    assert _read(hf_hub_download("org/gated", "f.txt", token=HUB_TEST_TOKEN)) == b"g"


# -- model card metadata -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "front_matter, problem",
    [
        ("tags: not-a-list", '"tags" must be a list'),
        ("tags: [ok, 3]", '"tags" must be a list'),
        ("license: [mit]", '"license" must be a string'),
        ("base_model: {a: 1}", '"base_model" must be a string or a list'),
        ("- just\n- a list", "must be a YAML mapping"),
        ("key: [unclosed", "Invalid YAML"),
    ],
)
def test_validate_card_metadata_rejects_bad_front_matter(front_matter: str, problem: str) -> None:
    errors, _ = validate_card_metadata(f"---\n{front_matter}\n---\n# Card\n")
    assert errors and problem in errors[0]


def test_validate_card_metadata_accepts_good_front_matter_and_warns_on_none() -> None:
    good = "---\nlicense: mit\ntags: [learngene]\nbase_model: [a/b, c/d]\n---\ntext"
    assert validate_card_metadata(good) == ([], [])
    errors, warnings = validate_card_metadata("# no metadata")
    assert errors == [] and warnings


def test_hub_rejects_a_card_with_bad_metadata(hub: str) -> None:
    api = HfApi()
    api.create_repo("org/card")
    bad = ModelCard("---\nlicense: [mit]\nbase_model: {a: 1}\n---\n# Card\n", ignore_metadata_errors=True)
    with pytest.raises(ValueError, match="license"):
        bad.push_to_hub("org/card")
    with pytest.raises(ValueError, match="base_model"):
        bad.validate()
    with pytest.raises(ValueError, match="tags"):  # a plain upload of README.md is checked too
        api.upload_file(path_or_fileobj=b"---\ntags: learngene\n---\n", path_in_repo="README.md", repo_id="org/card")
    assert not api.file_exists("org/card", "README.md")

    ModelCard.from_template(ModelCardData(license="mit", tags=["learngene"])).push_to_hub("org/card")
    metadata_update("org/card", {"base_model": "org/collective"})
    card = api.model_info("org/card").card_data
    assert card.license == "mit" and card.base_model == "org/collective" and card.tags == ["learngene"]


# -- transformers round trip -------------------------------------------------------------------


def test_transformers_push_to_hub_then_from_pretrained_by_sha(hub: str) -> None:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = BertModel(config)
    first = model.push_to_hub("org/tiny-bert")
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(1.0)
    second = model.push_to_hub("org/tiny-bert")
    assert first.oid != second.oid

    old = BertModel.from_pretrained("org/tiny-bert", revision=first.oid)
    new = BertModel.from_pretrained("org/tiny-bert")
    diff = new.embeddings.word_embeddings.weight - old.embeddings.word_embeddings.weight
    assert torch.allclose(diff, torch.ones_like(diff))
    assert torch.equal(new.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    assert old.config.hidden_size == 8


# -- the server itself -------------------------------------------------------------------------


def test_repos_survive_a_server_restart_on_the_same_root(tmp_path: Path) -> None:
    with LocalHubServer(tmp_path, tokens=TOKENS) as server:
        api = HfApi(endpoint=server.endpoint, token="hf_alice")
        api.create_repo("alice/kept")
        sha = api.upload_file(path_or_fileobj=b"kept", path_in_repo="f.txt", repo_id="alice/kept").oid
    with LocalHubServer(tmp_path) as server:
        info = HfApi(endpoint=server.endpoint, token=False).model_info("alice/kept")
        assert info.sha == sha and "f.txt" in [s.rfilename for s in info.siblings]


def test_resolve_serves_ranges_and_hub_headers(tmp_path: Path) -> None:
    with LocalHubServer(tmp_path, tokens=TOKENS, grants={"alice": ["org"]}) as server:
        api = HfApi(endpoint=server.endpoint, token="hf_alice")
        api.create_repo("org/range")
        sha = api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="d/n.txt", repo_id="org/range").oid
        request = urllib.request.Request(
            f"{server.endpoint}/org/range/resolve/main/d%2Fn.txt", headers={"Range": "bytes=3-5"}
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 206 and response.read() == b"345"
            assert response.headers["X-Repo-Commit"] == sha
            assert response.headers["ETag"].startswith('"') and "X-Xet-Hash" not in response.headers
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.endpoint}/org/range/resolve/main/missing.txt")
        err.value.close()
        assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "EntryNotFound"


def test_bad_server_arguments_raise_hub_error(tmp_path: Path) -> None:
    with pytest.raises(HubError, match="tokens"):
        LocalHubServer(tmp_path, tokens={"": "alice"})
    with pytest.raises(HubError, match="port"):
        LocalHubServer(tmp_path, port=70000)
    with pytest.raises(HubError, match="not running"):
        _ = LocalHubServer(tmp_path).endpoint


def test_library_hub_calls_take_an_explicit_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that is not HF_ENDPOINT: the library reaches it only through ``endpoint=``, and
    the clients' defaults are left alone."""
    import torch
    from huggingface_hub import constants

    from learngene_hf import CollectiveConfig, CollectiveModel, Learngene
    from learngene_hf.errors import HubError as LibraryHubError

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    default = constants.ENDPOINT
    collective = CollectiveModel(CollectiveConfig(preset="tiny", task_num_labels=[3]))
    learngene = Learngene.from_collective(collective, [1, 2])
    with local_hub(tmp_path / "other_hub", tokens=TOKENS, grants={"alice": ["org"]}) as endpoint:
        assert endpoint != default
        commit = learngene.push_to_hub("org/elsewhere", endpoint=endpoint, token="hf_alice")
        pulled = Learngene.from_pretrained(
            "org/elsewhere", revision=commit.oid, endpoint=endpoint, cache_dir=tmp_path / "cache"
        )
        assert pulled.config.source["pulled"]["commit_sha"] == commit.oid
        assert all(torch.equal(pulled.tensors[k], v) for k, v in learngene.tensors.items())
        model = from_learngene("org/elsewhere", 3, endpoint=endpoint, cache_dir=tmp_path / "cache2")
        assert model.config.learngene["repo_id"] == "org/elsewhere"
        assert constants.ENDPOINT == default  # nothing was redirected behind the clients' back
    with pytest.raises(LibraryHubError):  # the default endpoint (HF_ENDPOINT of this test session) serves nothing now
        Learngene.from_pretrained("org/elsewhere", cache_dir=tmp_path / "cache3")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_starts_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "learngene_hf.testing.hub",
            "--root",
            str(tmp_path / "root"),
            "--port",
            str(port),
            "--token",
            "hf_cli:carol",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/api/models/carol/none")
            except urllib.error.HTTPError as err:
                err.close()
                assert err.code == 404 and err.headers["X-Error-Code"] == "RepoNotFound"
                break
            except urllib.error.URLError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the CLI server did not start: {proc.communicate(timeout=5)}")
                time.sleep(0.1)
        HfApi(endpoint=endpoint, token="hf_cli").create_repo("cli-model")
        with urllib.request.urlopen(f"{endpoint}/api/models/carol/cli-model") as response:
            info = json.loads(response.read())
        assert info["id"] == "carol/cli-model" and len(info["sha"]) == 40
        assert (tmp_path / "root" / "repos" / "models" / "carol" / "cli-model" / "repo.json").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
