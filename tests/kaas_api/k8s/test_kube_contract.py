"""The contract of a user cluster's Kubernetes API through kaas, run against BOTH the real kube-apiserver and
the Python stand-in, so the stand-in cannot drift from the real thing unnoticed.

Every case goes the whole way a user's does: kubectl (or the ``kubernetes`` Python client) with a kubeconfig
downloaded from kaas → the kaas API over HTTPS → the tunnel server → the cluster's agent → the apiserver.
The real apiserver is a namespace of the test's own in the session's control plane (kwok runs its pods on a
fake node, serves their logs, runs exec on this machine and forwards ports to a greeting server:
``tests.kube_targets``); the stand-in is a fresh one at the same version.

A case the stand-in does not support carries ``standin_unsupported("what")``: on the stand-in it is an
expected failure (strict: when the stand-in learns it, the mark must go), and the run ends with the list of
them (``pytest_terminal_summary`` in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.config import ApiSettings
from kaas_core.tunnel_registry import InMemoryTunnelRegistry
from kaas_tunnel.server import TunnelServer
from nodesim.kube_real import DEFAULT_POD_LOG
from tests.kaas_api.conftest import World
from tests.kaas_api.k8s.conftest import KUBECTL, connected, download_kubeconfig, world_cluster
from tests.kube_targets import PORT_FORWARD_GREETING, REAL, SHARED_NODE, STANDIN, KubeTarget, names_of

pytestmark = pytest.mark.parametrize("kube", [REAL, STANDIN], indirect=True)

KUBECTL_TIMEOUT_SECONDS = 90.0
WHO = ("owner", "member", "viewer")


def standin_unsupported(what: str, *, runs: bool = True) -> pytest.MarkDecorator:
    """``runs=False``: on the stand-in the case would only wait for its timeout, so it is not run there."""
    return pytest.mark.standin_unsupported(what, runs=runs)


@dataclass
class ThroughKaas:
    """The cluster as its users reach it: kubectl with each role's downloaded kubeconfig."""

    kube: KubeTarget
    kubeconfigs: dict[str, Path]

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    def argv(self, who: str, *args: str) -> list[str]:
        return [
            str(KUBECTL),
            "--kubeconfig",
            str(self.kubeconfigs[who]),
            "--request-timeout",
            "30s",
            "-n",
            self.namespace,
            *args,
        ]

    async def kubectl(self, who: str, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *self.argv(who, *args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout=KUBECTL_TIMEOUT_SECONDS)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()

    async def ok(self, who: str, *args: str, stdin: bytes | None = None) -> str:
        code, stdout, stderr = await self.kubectl(who, *args, stdin=stdin)
        assert code == 0, f"kubectl {' '.join(args)}: {stderr}"
        return stdout


@pytest.fixture
async def kaas(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> AsyncIterator[ThroughKaas]:
    kubeconfigs = {}
    for who in WHO:
        kubeconfigs[who] = tmp_path / f"{who}.kubeconfig"
        await download_kubeconfig(settings, world, who, kubeconfigs[who])
    async with connected(tunnel_server, registry, world_cluster(world, session_factory), kube, tmp_path):
        yield ThroughKaas(kube=kube, kubeconfigs=kubeconfigs)


def configmap(name: str, **data: str) -> bytes:
    document = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    return json.dumps(document).encode()


def forbidden(kaas: ThroughKaas, verb: str, resource: str, name: str) -> str:
    """What a real kube-apiserver's RBAC authorizer answers a viewer, as kubectl prints it."""
    return (
        f'Error from server (Forbidden): {resource} "{name}" is forbidden: User "kaas:viewer" cannot {verb}'
        f' resource "{resource}" in API group "" in the namespace "{kaas.namespace}"'
    )


# --- get, create, apply, watch, delete -------------------------------------------------------------------


async def test_kubectl_create_then_get_shows_the_object(kaas: ThroughKaas) -> None:
    await kaas.ok("member", "create", "configmap", "made", "--from-literal=answer=42")
    got = await kaas.ok("member", "get", "configmap", "made", "-o", "jsonpath={.data.answer}")
    listed = json.loads(await kaas.ok("viewer", "get", "configmaps", "-o", "json"))
    assert got == "42"
    assert names_of(listed["items"]) == ["made"]


async def test_kubectl_get_namespaces_shows_the_tests_namespace(kaas: ThroughKaas) -> None:
    listed = (await kaas.ok("owner", "get", "namespaces", "-o", "name")).split()
    assert f"namespace/{kaas.namespace}" in listed


@standin_unsupported("OpenAPI documents (kubectl apply validates against them)")
async def test_kubectl_apply_creates_then_changes_a_configmap(kaas: ThroughKaas) -> None:
    first = await kaas.ok("member", "apply", "-f", "-", stdin=configmap("applied", colour="blue"))
    second = await kaas.ok("member", "apply", "-f", "-", stdin=configmap("applied", colour="green"))
    got = await kaas.ok("member", "get", "configmap", "applied", "-o", "jsonpath={.data.colour}")
    assert (first.strip(), second.strip(), got) == (
        "configmap/applied created",
        "configmap/applied configured",
        "green",
    )


async def test_kubectl_get_watch_prints_an_object_created_meanwhile(kaas: ThroughKaas) -> None:
    await kaas.ok("member", "create", "configmap", "before")
    watch = await asyncio.create_subprocess_exec(
        *kaas.argv("viewer", "get", "configmaps", "-w", "-o", "name"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert watch.stdout is not None
    try:
        seen: list[str] = []
        # the list comes first; the watch goes on from it, so what is made after it shows up
        while "configmap/before" not in seen:
            seen.append((await asyncio.wait_for(watch.stdout.readline(), timeout=30)).decode().strip())
        await kaas.ok("member", "create", "configmap", "during")
        while "configmap/during" not in seen:
            line = await asyncio.wait_for(watch.stdout.readline(), timeout=30)
            assert line, f"the watch ended; it printed {seen}"
            seen.append(line.decode().strip())
    finally:
        watch.terminate()
        await watch.wait()
    assert seen[-1] == "configmap/during"


async def test_kubectl_delete_removes_the_object(kaas: ThroughKaas) -> None:
    await kaas.ok("member", "create", "configmap", "doomed")
    deleted = await kaas.ok("member", "delete", "configmap", "doomed")
    code, _, stderr = await kaas.kubectl("member", "get", "configmap", "doomed")
    assert deleted.startswith('configmap "doomed" deleted')
    assert code != 0
    assert 'configmaps "doomed" not found' in stderr


WEB_APP = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"greeting": "hello"}},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.invalid/web:1",
                            "ports": [{"containerPort": 8080}],
                            "envFrom": [{"configMapRef": {"name": "web"}}],
                        }
                    ]
                },
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    },
]


@standin_unsupported("Deployments (apps/v1) and their rollout: it has no controllers", runs=False)
async def test_kubectl_apply_of_a_deployment_a_service_and_a_configmap_rolls_out_on_kwok_nodes(
    kaas: ThroughKaas,
) -> None:
    manifest = yaml.safe_dump_all(WEB_APP).encode()
    applied = await kaas.ok("member", "apply", "-f", "-", stdin=manifest)
    assert applied.splitlines() == [
        "configmap/web created",
        "deployment.apps/web created",
        "service/web created",
    ]
    rolled = await kaas.ok("member", "rollout", "status", "deployment/web", "--timeout=120s")
    assert 'deployment "web" successfully rolled out' in rolled
    table = await kaas.ok("viewer", "get", "deploy,pods", "-o", "wide")
    pods = [line.split() for line in table.splitlines() if line.startswith("pod/web-")]
    assert len(pods) == 2, table
    assert all(row[2] == "Running" and SHARED_NODE in row for row in pods), table
    assert re.search(r"^deployment\.apps/web\s+2/2\s", table, re.MULTILINE), table
    node = json.loads(await kaas.ok("owner", "get", "node", SHARED_NODE, "-o", "json"))
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"  # a kwok node, Ready
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


# --- RBAC and impersonation -------------------------------------------------------------------------------


async def test_a_viewers_kubectl_delete_is_refused_by_the_clusters_rbac(kaas: ThroughKaas) -> None:
    await kaas.ok("member", "create", "configmap", "kept")
    code, _, stderr = await kaas.kubectl("viewer", "delete", "configmap", "kept")
    still = await kaas.ok("viewer", "get", "configmap", "kept", "-o", "name")
    assert code == 1
    assert stderr.strip() == forbidden(kaas, "delete", "configmaps", "kept")
    assert still.strip() == "configmap/kept"


async def test_client_impersonation_never_reaches_the_apiserver(kaas: ThroughKaas) -> None:
    await kaas.ok("member", "create", "configmap", "kept")
    claim = ("--as", "kubernetes-admin", "--as-group", "system:masters")
    code, _, stderr = await kaas.kubectl("viewer", *claim, "delete", "configmap", "kept")
    who = json.loads(await kaas.ok("viewer", *claim, "auth", "whoami", "-o", "json"))
    assert code == 1
    assert stderr.strip() == forbidden(kaas, "delete", "configmaps", "kept")
    assert who["status"]["userInfo"]["username"] == "kaas:viewer"
    assert "system:masters" not in who["status"]["userInfo"]["groups"]


@pytest.mark.parametrize(
    ("who", "group"), [("viewer", "kaas:viewer"), ("member", "kaas:member"), ("owner", "kaas:owner")]
)
async def test_kubectl_auth_whoami_shows_the_kaas_user_and_the_groups_of_the_role(
    kaas: ThroughKaas, who: str, group: str
) -> None:
    user = json.loads(await kaas.ok(who, "auth", "whoami", "-o", "json"))["status"]["userInfo"]
    assert user["username"] == f"kaas:{who}"
    assert set(user["groups"]) - {"system:authenticated"} == {"kaas:authenticated", group}


async def test_kubectl_auth_can_i_answers_from_the_clusters_rbac(kaas: ThroughKaas) -> None:
    viewer = await kaas.kubectl("viewer", "auth", "can-i", "delete", "configmaps")
    member = await kaas.kubectl("member", "auth", "can-i", "delete", "configmaps")
    reads = await kaas.kubectl("viewer", "auth", "can-i", "list", "configmaps")
    assert (viewer[0], viewer[1].strip()) == (1, "no")
    assert (member[0], member[1].strip()) == (0, "yes")
    assert (reads[0], reads[1].strip()) == (0, "yes")


# --- exec, logs, port-forward ------------------------------------------------------------------------------


async def test_kubectl_exec_runs_a_command_in_a_pod(kaas: ThroughKaas) -> None:
    await asyncio.to_thread(kaas.kube.create_pod, "shell")
    ran = await kaas.kubectl("member", "exec", "shell", "--", "echo", "hello", "from", "kaas")
    failed = await kaas.kubectl("member", "exec", "shell", "--", "false")
    refused = await kaas.kubectl("viewer", "exec", "shell", "--", "echo", "hi")
    assert ran == (0, "hello from kaas\n", ""), ran
    assert failed[0] == 1, failed
    assert refused[0] == 1
    assert 'User "kaas:viewer" cannot create resource "pods/exec"' in refused[2]


@standin_unsupported("pod logs (the log subresource)")
async def test_kubectl_logs_prints_the_containers_log(kaas: ThroughKaas) -> None:
    await asyncio.to_thread(kaas.kube.create_pod, "talker")
    logs = await kaas.ok("viewer", "logs", "talker")
    assert logs == f"{DEFAULT_POD_LOG}\n"


# kubectl asks for the WebSocket subprotocol "SPDY/3.1+portforward.k8s.io", not an RFC 6455 token: every hop
# carries it as it is (kaas_core.serving.websocket, agents.tunnel.ws_client)
@standin_unsupported("port-forward")
async def test_kubectl_port_forward_reaches_the_pods_port(kaas: ThroughKaas) -> None:
    await asyncio.to_thread(kaas.kube.create_pod, "server")
    forward = await asyncio.create_subprocess_exec(
        *kaas.argv("member", "port-forward", "pod/server", ":8080"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert forward.stdout is not None
    try:
        line = (await asyncio.wait_for(forward.stdout.readline(), timeout=30)).decode()
        match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line + (await forward.stderr.read(4000)).decode() if forward.stderr else line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(match.group(1)))
        greeting = await asyncio.wait_for(reader.read(len(PORT_FORWARD_GREETING)), timeout=30)
        writer.close()
    finally:
        forward.terminate()
        await forward.wait()
    assert greeting == PORT_FORWARD_GREETING


# --- versions and clients ----------------------------------------------------------------------------------


async def test_kubectl_version_shows_the_clusters_version_without_a_skew_warning(kaas: ThroughKaas) -> None:
    code, stdout, stderr = await kaas.kubectl("viewer", "version", "-o", "json")
    versions = json.loads(stdout)
    assert code == 0, stderr
    assert versions["serverVersion"]["gitVersion"] == kaas.kube.version
    assert versions["clientVersion"]["minor"] == versions["serverVersion"]["minor"]
    assert "WARNING" not in stderr
    assert "version difference" not in stderr


def python_client_session(kubeconfig: Path, namespace: str) -> dict[str, Any]:
    """What a user's script does with the ``kubernetes`` package: load the kubeconfig, list, create,
    watch from the list (blocking: run it in a thread while the API serves in the event loop)."""
    from kubernetes import client, config, watch

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        listed = core.list_namespaced_config_map(namespace)
        created = core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "from-python"}, "data": {"made": "by the python client"}}
        )
        events = []
        watcher = watch.Watch()
        for event in watcher.stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=30,
        ):
            events.append((event["type"], event["object"].metadata.name))
            if event["object"].metadata.name == "from-python":
                watcher.stop()
        version = client.VersionApi(api).get_code().git_version
        return {
            "listed": names_of([{"metadata": {"name": item.metadata.name}} for item in listed.items]),
            "created": created.metadata.name,
            "events": events,
            "version": version,
        }
    finally:
        api.close()


async def test_the_kubernetes_python_client_lists_creates_and_watches_with_the_downloaded_kubeconfig(
    kaas: ThroughKaas,
) -> None:
    await kaas.ok("member", "create", "configmap", "already-there")
    seen = await asyncio.to_thread(python_client_session, kaas.kubeconfigs["member"], kaas.namespace)
    assert seen == {
        "listed": ["already-there"],
        "created": "from-python",
        "events": [("ADDED", "from-python")],
        "version": kaas.kube.version,
    }
