"""The fake Hub itself: the real client's calls work against it, and what it does not know fails loudly."""

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from hub_server import hub_env, hub_server  # noqa: F401 - fixtures


@pytest.fixture
def api(hub_env):
    return HfApi(endpoint=hub_env.url, token=hub_env.token)


def test_an_unknown_route_answers_404_naming_it_and_is_recorded(hub_env):
    response = httpx2.get(f"{hub_env.url}/api/models/me/x/some-new-route", headers={})

    assert response.status_code == 404
    assert response.json()["error"] == "fake Hub: no route for GET /api/models/me/x/some-new-route"
    assert hub_env.unknown_routes == ["GET /api/models/me/x/some-new-route"]


def test_repo_creation_conflicts_with_its_url_and_keeps_the_private_flag(api, hub_env):
    url = api.create_repo("me/private", private=True)
    again = api.create_repo("me/private", exist_ok=True)

    assert url.repo_id == again.repo_id == "me/private"
    assert [status for _, path, status in hub_env.requests_of("/api/repos/create")] == [200, 409]
    assert api.model_info("me/private").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_env.url, token=False).model_info("me/private")


def test_writes_need_the_token(hub_env):
    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        HfApi(endpoint=hub_env.url, token="hf_wrong").create_repo("me/x")
    assert hub_env.repos == {}


def test_files_round_trip_through_branches_tags_and_downloads(api, hub_env, tmp_path):
    api.create_repo("me/x")
    api.create_branch("me/x", branch="marker-0.50")
    for content, path, message in ((b"\0weights", "model.safetensors", "add weights"),
                                   (b"{}", "sub/config.json", "add config")):
        api.upload_file(path_or_fileobj=content, path_in_repo=path, repo_id="me/x", revision="marker-0.50",
                        commit_message=message)
    api.create_tag("me/x", tag="v1", revision="marker-0.50")

    repo = hub_env.repo("me/x")
    gitattributes = repo.files("main")[".gitattributes"]
    expected = {".gitattributes": gitattributes, "model.safetensors": b"\0weights", "sub/config.json": b"{}"}
    assert repo.files("v1") == expected
    assert repo.resolve("marker-0.50").files["model.safetensors"].lfs
    assert not repo.resolve("marker-0.50").files["sub/config.json"].lfs
    assert sorted(api.list_repo_files("me/x", revision="v1")) == sorted(repo.files("v1"))
    assert [ref.name for ref in api.list_repo_refs("me/x").tags] == ["v1"]
    assert [commit.title for commit in api.list_repo_commits("me/x", revision="marker-0.50")] == [
        "add config", "add weights", "initial commit",
    ]
    path = hf_hub_download("me/x", "model.safetensors", revision="v1", endpoint=hub_env.url, cache_dir=tmp_path)
    assert open(path, "rb").read() == b"\0weights"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("me/x", "missing.json", revision="v1", endpoint=hub_env.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files("me/x", revision="no-such-branch")
    assert hub_env.unknown_routes == []


def test_injected_faults_answer_the_status_or_drop_the_connection(api, hub_env):
    hub_env.inject_fault("create", times=1, status=503)
    hub_env.inject_fault("create", times=1, status=None)

    with pytest.raises(HfHubHTTPError, match="503"):
        api.create_repo("me/x")
    with pytest.raises(httpx2.RemoteProtocolError):
        api.create_repo("me/x")
    assert api.create_repo("me/x").repo_id == "me/x"


def test_a_down_hub_drops_every_connection(api, hub_env):
    hub_env.down = True

    with pytest.raises(httpx2.RemoteProtocolError):
        api.create_repo("me/x")
    assert hub_env.repos == {}
