"""The OpenAPI document is what ``kaas up`` does: schemathesis (``--checks all``) generates requests from it,
as an admin and as a project owner who is no admin, and every answer must be what the document says.

A short run (``KAAS_FUZZ_EXAMPLES`` cases per operation and phase, 5 by default); the README gives the long
form. The cluster the owner creates never boots (``--boot-delay`` of an hour), so the k8s proxy answers its
documented 503 "agent not connected": the hooks (``tests/e2e/schemathesis_hooks.py``) drop that failure of
``not_a_server_error`` and only that, and the 422s of rules a JSON Schema cannot state.
"""

from __future__ import annotations

import importlib
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import KaasUp, running_kaas_up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]
CLIENT_GENERATOR = Path(sys.executable).parent / "openapi-python-client"
EXAMPLES = int(os.environ.get("KAAS_FUZZ_EXAMPLES", "5"))
RUN_TIMEOUT_SECONDS = 60 + EXAMPLES * 30


@pytest.fixture(scope="module")
def kaas_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaasUp]:
    home = tmp_path_factory.mktemp("kaas-up")
    with running_kaas_up(home, "--boot-delay", "3600", "--sweep-interval", "3600") as up:
        yield up


def trusting(up: KaasUp) -> ssl.SSLContext:
    """TLS that trusts the CA ``kaas up`` made in its state directory."""
    return ssl.create_default_context(cafile=str(up.ca_file))


def api(up: KaasUp, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=up.url, verify=trusting(up), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.fixture(scope="module")
def owner_token(kaas_up: KaasUp) -> str:
    """A user who is no admin, owner of a project with a cluster whose agent never connects."""
    with api(kaas_up, kaas_up.admin_token) as admin:
        created = admin.post("/v1/users", json={"name": "olivia"})
        assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    with api(kaas_up, token) as owner:
        assert owner.post("/v1/projects", json={"name": "olivias"}).status_code == 201
        cluster = owner.post(
            "/v1/projects/olivias/clusters",
            json={
                "name": "c1",
                "region": "local",
                "control_plane": {"flavor": "m1.small"},
                "node_pools": [{"name": "p1", "flavor": "m1.small", "count": 1}],
            },
        )
        assert cluster.status_code == 202, cluster.text
    return token


def token_ids(up: KaasUp, *tokens: str) -> list[str]:
    ids = []
    for token in tokens:
        with api(up, token) as client:
            ids += [row["id"] for row in client.get("/v1/tokens").json()]
    return ids


def schemathesis(up: KaasUp, token: str, *, keep_token_ids: list[str], report_dir: Path) -> str:
    """``schemathesis run --checks all`` from the repository's root (its ``schemathesis.toml`` names the
    hooks); the output, or a failed test with it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAAS_FUZZ_KEEP_TOKEN_IDS": ",".join(keep_token_ids)}
    command = [
        *SCHEMATHESIS,
        "run",
        f"{up.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--tls-verify",
        str(up.ca_file),
        "--header",
        f"Authorization: Bearer {token}",
        "--seed",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        "--generation-database",
        "none",
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20_000:]
    return output


def cases_passed(output: str) -> int:
    """How many cases schemathesis generated, each of which passed every check."""
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found is not None, output[-5_000:]
    assert found.group(1) == found.group(2), output[-5_000:]
    return int(found.group(2))


def operation_count(up: KaasUp) -> int:
    with httpx.Client(verify=trusting(up)) as client:
        paths = client.get(f"{up.url}/openapi.json").json()["paths"]
    return sum(len(operations) for operations in paths.values())


def test_the_proxy_answers_its_documented_503_while_the_agent_is_not_connected(
    kaas_up: KaasUp, owner_token: str
) -> None:
    with api(kaas_up, owner_token) as owner:
        cluster_id = owner.get("/v1/projects/olivias/clusters/c1").json()["id"]
        response = owner.get(f"/k8s/clusters/{cluster_id}/api")
        documented = owner.get("/openapi.json").json()["paths"]["/k8s/clusters/{cluster_id}/{path}"]
    assert response.status_code == 503
    assert response.json()["kind"] == "Status"
    assert "is not connected" in response.json()["message"]
    assert "503" in documented["get"]["responses"]


@pytest.mark.parametrize("who", ["admin", "owner"])
def test_every_answer_is_what_the_openapi_document_says(
    kaas_up: KaasUp, owner_token: str, who: str, tmp_path: Path
) -> None:
    token = kaas_up.admin_token if who == "admin" else owner_token
    keep = token_ids(kaas_up, kaas_up.admin_token, owner_token)
    output = schemathesis(kaas_up, token, keep_token_ids=keep, report_dir=tmp_path)
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None, output[-5_000:]
    assert int(tested.group(1)) == operation_count(kaas_up), output[-5_000:]
    passed = cases_passed(output)
    assert passed >= int(tested.group(1)), output[-5_000:]
    dropped = re.search(r"Filtered: (\d+)", output)
    # shown by pytest -rA (or -s): the figures of a long run (README)
    print(f"{who}: {passed} cases passed; dropped by the hooks: {dropped.group(1) if dropped else 0}")


def generated_client(up: KaasUp, directory: Path) -> Any:
    """The package openapi-python-client generates from ``/openapi.json``, imported."""
    spec = directory / "openapi.json"
    with httpx.Client(verify=trusting(up)) as client:
        spec.write_bytes(client.get(f"{up.url}/openapi.json").content)
    package = directory / "generated"
    command = [str(CLIENT_GENERATOR), "generate", "--path", str(spec), "--meta", "none"]
    done = subprocess.run(
        [*command, "--output-path", str(package)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("generated")
    finally:
        sys.path.remove(str(directory))


def test_a_client_generated_from_the_document_works(
    kaas_up: KaasUp, owner_token: str, tmp_path: Path
) -> None:
    kaas = generated_client(kaas_up, tmp_path)
    try:
        me_api = importlib.import_module("generated.api.auth.me_v1_me_get")
        project_api = importlib.import_module("generated.api.projects.get_project_v1_projects_project_get")
        create_api = importlib.import_module("generated.api.projects.create_project_v1_projects_post")
        models = importlib.import_module("generated.models")
        # an answer with a status the document does not list would raise UnexpectedStatus
        client = kaas.AuthenticatedClient(
            base_url=kaas_up.url,
            token=owner_token,
            verify_ssl=trusting(kaas_up),
            raise_on_unexpected_status=True,
        )
        me = me_api.sync(client=client)
        assert isinstance(me, models.MeOut)
        assert me.name == "olivia"
        assert isinstance(me.created_at, datetime)
        assert me.created_at.utcoffset() is not None
        missing = project_api.sync("no-such-project", client=client)
        assert isinstance(missing, models.ErrorBody)
        assert missing.error == "not_found"
        refused = create_api.sync(client=client, body=models.ProjectCreate(name="Not A Name"))
        assert isinstance(refused, models.ErrorBody)
        assert refused.error == "invalid_input"
        [problem] = refused.detail
        assert isinstance(problem, models.FieldProblem)
        assert (problem.field, problem.type_) == ("name", "value_error")
    finally:
        for name in [name for name in sys.modules if name == "generated" or name.startswith("generated.")]:
            del sys.modules[name]
