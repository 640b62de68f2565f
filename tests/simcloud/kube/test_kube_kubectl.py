"""Real kubectl against the stand-in: discovery, get, create, delete, watch, errors."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

from simcloud.kube.testing import KubeStandinHandle

from .conftest import Kubectl


def test_version_reports_the_configured_git_version(kubectl: Kubectl) -> None:
    result = kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert '"gitVersion": "v1.30.2"' in result.stdout


def test_get_namespaces_lists_the_default_ones(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", "-o", "name")
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    for expected in ("namespace/default", "namespace/kube-system", "namespace/kaas-system"):
        assert expected in names


def test_get_namespaces_prints_a_table(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[0] == "NAME"
    assert header[-1] == "AGE"
    assert "kube-system" in result.stdout


def test_create_namespace_twice_answers_already_exists(kubectl: Kubectl) -> None:
    first = kubectl("create", "ns", "team-a")
    assert first.returncode == 0, first.stderr
    assert "namespace/team-a created" in first.stdout
    second = kubectl("create", "ns", "team-a")
    assert second.returncode != 0
    assert 'Error from server (AlreadyExists): namespaces "team-a" already exists' in second.stderr


def test_get_missing_namespace_answers_not_found(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", "nope")
    assert result.returncode != 0
    assert 'Error from server (NotFound): namespaces "nope" not found' in result.stderr


def test_delete_namespace_removes_it_and_its_objects(kubectl: Kubectl, standin: KubeStandinHandle) -> None:
    assert kubectl("create", "ns", "doomed").returncode == 0
    assert kubectl("-n", "doomed", "create", "configmap", "settings", "--from-literal=a=1").returncode == 0
    deleted = kubectl("delete", "ns", "doomed", "--timeout", "10s")
    assert deleted.returncode == 0, deleted.stderr
    assert 'namespace "doomed" deleted' in deleted.stdout
    assert "NotFound" in kubectl("get", "ns", "doomed").stderr
    assert kubectl("create", "ns", "doomed").returncode == 0
    leftover = kubectl("-n", "doomed", "get", "configmap", "settings")
    assert 'configmaps "settings" not found' in leftover.stderr


def test_configmap_create_get_delete_in_a_namespace(kubectl: Kubectl) -> None:
    assert kubectl("create", "ns", "apps").returncode == 0
    created = kubectl("-n", "apps", "create", "configmap", "cfg", "--from-literal=color=blue")
    assert created.returncode == 0, created.stderr
    value = kubectl("-n", "apps", "get", "configmap", "cfg", "-o", "jsonpath={.data.color}")
    assert value.returncode == 0, value.stderr
    assert value.stdout == "blue"
    assert kubectl("-n", "apps", "delete", "configmap", "cfg").returncode == 0
    missing = kubectl("-n", "apps", "get", "configmap", "cfg")
    assert 'Error from server (NotFound): configmaps "cfg" not found' in missing.stderr


def test_apply_with_validate_false_creates_then_updates(kubectl: Kubectl) -> None:
    manifest = (
        '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": "default"},'
        ' "data": {"k": "%s"}}'
    )
    for value, verb in (("1", "created"), ("2", "configured")):
        result = subprocess.run(
            kubectl.args("apply", "--validate=false", "-f", "-"), input=manifest % value, capture_output=True,
            text=True, timeout=30, check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"configmap/applied {verb}" in result.stdout
    assert kubectl("get", "cm", "applied", "-o", "jsonpath={.data.k}").stdout == "2"


def test_unauthenticated_token_answers_401(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", token="not-a-known-token")
    assert result.returncode != 0
    assert "You must be logged in to the server" in result.stderr


def test_get_watch_streams_an_added_event_for_a_new_namespace(kubectl: Kubectl) -> None:
    process = subprocess.Popen(
        kubectl.args("get", "ns", "-w", "-o", "name"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while "namespace/default" not in seen:  # the initial list was printed: the watch is next
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        time.sleep(0.5)
        assert kubectl("create", "ns", "watched").returncode == 0
        while "namespace/watched" not in seen:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        process.kill()
        process.communicate(timeout=10)
        reader.join(timeout=5)
