"""``pods/{name}/exec`` over WebSocket: the channel protocol with a real WebSocket client; real kubectl."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from simcloud.kube.exec import (
    CANNOT_EXECUTE,
    CLOSE,
    ERROR,
    STDERR,
    STDIN,
    STDOUT,
    V4_PROTOCOL,
    V5_PROTOCOL,
    emulate,
    exit_status,
    select_subprotocol,
)
from simcloud.kube.server import KubeStandin
from simcloud.kube.testing import KubeStandinHandle

from .conftest import ADMIN_TOKEN, AGENT_TOKEN, PLAIN_TOKEN, TOKENS, Kubectl, bearer

POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec: {containers: [{name: app, image: busybox}]}
"""
VIEWER = {"Impersonate-User": "kaas:alice", "Impersonate-Group": "kaas:viewer"}
MEMBER = {"Impersonate-User": "kaas:bob", "Impersonate-Group": "kaas:member"}
CLOSE_STDIN = bytes([CLOSE, STDIN])


@pytest.fixture
def pod(standin: KubeStandinHandle) -> str:
    standin.standin.apply(POD)
    return "web"


def exec_path(pod: str, command: Sequence[str], *, stdin: bool = False, namespace: str = "default") -> str:
    query = [("command", arg) for arg in command] + [("container", "app"), ("stdout", "true"),
                                                      ("stderr", "true")]
    if stdin:
        query.append(("stdin", "true"))
    return f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?{urlencode(query)}"


@asynccontextmanager
async def exec_socket(
    standin: KubeStandinHandle,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    subprotocols: Sequence[str] = (V5_PROTOCOL,),
) -> AsyncIterator[ClientConnection]:
    assert standin.ca is not None
    context = ssl.create_default_context(cadata=standin.ca.decode())
    uri = standin.url.replace("https://", "wss://") + path
    async with connect(
        uri, ssl=context, additional_headers=bearer(ADMIN_TOKEN) if headers is None else headers,
        subprotocols=[Subprotocol(p) for p in subprotocols] or None, open_timeout=10,
    ) as websocket:
        yield websocket


async def read_to_close(websocket: ClientConnection) -> dict[int, bytes]:
    """Every channel's bytes, joined, until the server closes the WebSocket normally."""
    channels: dict[int, bytes] = {}
    async for message in websocket:
        assert isinstance(message, bytes)
        channels[message[0]] = channels.get(message[0], b"") + message[1:]
    assert websocket.close_code == 1000
    return channels


async def refusal(standin: KubeStandinHandle, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as raised:
        async with exec_socket(standin, path, **kwargs):
            pass
    response = raised.value.response
    return response.status_code, json.loads(response.body or b"")


# --- the emulated commands and the Status they end with ---------------------------------------------------


@pytest.mark.parametrize(
    ("command", "stdout", "exit_code"),
    [
        (["echo", "hello", "world"], b"hello world\n", 0),
        (["echo"], b"\n", 0),
        (["true"], b"", 0),
        (["false"], b"", 1),
        (["sh", "-c", "exit 3"], b"", 3),
        (["sh", "-c", "exit"], b"", 0),
    ],
)
def test_emulated_commands_print_and_exit_like_coreutils(
    command: list[str], stdout: bytes, exit_code: int
) -> None:
    outcome = emulate(command)
    assert (outcome.stdout, outcome.stderr, outcome.exit_code) == (stdout, b"", exit_code)
    assert not outcome.copies_stdin


def test_cat_copies_stdin() -> None:
    assert emulate(["cat"]).copies_stdin


@pytest.mark.parametrize("command", [["ls"], ["sh", "-c", "ls"], ["cat", "/etc/passwd"]])
def test_anything_else_is_an_executable_not_found(command: list[str]) -> None:
    outcome = emulate(command)
    assert f'exec: "{command[0]}": executable file not found in $PATH'.encode() in outcome.stderr
    assert outcome.exit_code == CANNOT_EXECUTE


def test_a_non_zero_exit_is_a_failure_status_client_go_reads_the_exit_code_from() -> None:
    assert exit_status(["false"], 1) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command [false], exit code 1",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "1"}]},
    }
    assert exit_status(["true"], 0) == {"metadata": {}, "status": "Success"}


def test_v5_is_preferred_over_v4_and_older_versions_are_not_spoken() -> None:
    assert select_subprotocol([V4_PROTOCOL, V5_PROTOCOL]) == V5_PROTOCOL
    assert select_subprotocol(["v3.channel.k8s.io", V4_PROTOCOL]) == V4_PROTOCOL
    assert select_subprotocol(["v3.channel.k8s.io", "channel.k8s.io"]) is None


# --- a real WebSocket client ------------------------------------------------------------------------------


async def test_echo_streams_stdout_then_a_success_status(standin: KubeStandinHandle, pod: str) -> None:
    async with exec_socket(standin, exec_path(pod, ["echo", "hello", "world"])) as websocket:
        assert websocket.subprotocol == V5_PROTOCOL
        channels = await read_to_close(websocket)
    assert channels == {STDOUT: b"hello world\n", ERROR: b'{"metadata": {}, "status": "Success"}'}


async def test_false_ends_with_exit_code_1_in_the_status(standin: KubeStandinHandle, pod: str) -> None:
    async with exec_socket(standin, exec_path(pod, ["false"])) as websocket:
        channels = await read_to_close(websocket)
    status = json.loads(channels[ERROR])
    assert (status["status"], status["reason"]) == ("Failure", "NonZeroExitCode")
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "1"}]
    assert STDOUT not in channels


async def test_an_unknown_command_says_so_on_stderr(standin: KubeStandinHandle, pod: str) -> None:
    async with exec_socket(standin, exec_path(pod, ["ls", "-l"])) as websocket:
        channels = await read_to_close(websocket)
    assert b'exec: "ls": executable file not found in $PATH' in channels[STDERR]
    assert json.loads(channels[ERROR])["details"]["causes"][0]["message"] == str(CANNOT_EXECUTE)


async def test_cat_echoes_stdin_until_the_v5_close(standin: KubeStandinHandle, pod: str) -> None:
    async with exec_socket(standin, exec_path(pod, ["cat"], stdin=True)) as websocket:
        await websocket.send(bytes([STDIN]) + b"some ")
        await websocket.send(bytes([4]) + b'{"Width": 80, "Height": 24}')  # a resize: ignored
        await websocket.send(bytes([STDIN]) + b"\x00binary\xff data")
        await websocket.send(CLOSE_STDIN)
        channels = await read_to_close(websocket)
    assert channels[STDOUT] == b"some \x00binary\xff data"
    assert json.loads(channels[ERROR])["status"] == "Success"


async def test_v4_is_spoken_when_v5_is_not_offered(standin: KubeStandinHandle, pod: str) -> None:
    path = exec_path(pod, ["echo", "v4"])
    async with exec_socket(standin, path, subprotocols=["v3.channel.k8s.io", V4_PROTOCOL]) as websocket:
        assert websocket.subprotocol == V4_PROTOCOL
        assert (await read_to_close(websocket))[STDOUT] == b"v4\n"


async def test_a_member_may_exec_through_impersonation(standin: KubeStandinHandle, pod: str) -> None:
    headers = bearer(AGENT_TOKEN, **MEMBER)
    async with exec_socket(standin, exec_path(pod, ["echo", "hi"]), headers=headers) as websocket:
        assert (await read_to_close(websocket))[STDOUT] == b"hi\n"


async def test_an_unknown_pod_is_refused_with_404(standin: KubeStandinHandle) -> None:
    code, status = await refusal(standin, exec_path("nope", ["true"]))
    assert code == 404
    assert (status["reason"], status["message"]) == ("NotFound", 'pods "nope" not found')


async def test_a_viewer_is_refused_with_403(standin: KubeStandinHandle, pod: str) -> None:
    code, status = await refusal(standin, exec_path(pod, ["true"]), headers=bearer(AGENT_TOKEN, **VIEWER))
    assert code == 403
    assert status["message"] == (
        'pods "web" is forbidden: User "kaas:alice" cannot create resource "pods/exec" in API group "" '
        'in the namespace "default"'
    )


async def test_a_user_without_bindings_is_refused_with_403(standin: KubeStandinHandle, pod: str) -> None:
    code, status = await refusal(standin, exec_path(pod, ["true"]), headers=bearer(PLAIN_TOKEN))
    assert (code, status["reason"]) == (403, "Forbidden")


async def test_an_unauthenticated_handshake_is_refused_with_401(standin: KubeStandinHandle, pod: str) -> None:
    assert (await refusal(standin, exec_path(pod, ["true"]), headers={}))[0] == 401
    code, status = await refusal(standin, exec_path(pod, ["true"]), headers=bearer("wrong"))
    assert (code, status["reason"]) == (401, "Unauthorized")


async def test_a_handshake_without_a_channel_subprotocol_is_refused_with_400(
    standin: KubeStandinHandle, pod: str
) -> None:
    code, status = await refusal(standin, exec_path(pod, ["true"]), subprotocols=())
    assert (code, status["reason"]) == (400, "BadRequest")
    assert V5_PROTOCOL in status["message"]


async def test_a_request_without_a_command_is_refused_with_400(standin: KubeStandinHandle, pod: str) -> None:
    code, status = await refusal(standin, exec_path(pod, []))
    assert (code, status["message"]) == (400, "you must specify at least one command for the container")


async def test_a_completed_pod_is_refused_with_400(standin: KubeStandinHandle, pod: str) -> None:
    standin.standin.apply(POD + "status: {phase: Succeeded}\n")
    code, status = await refusal(standin, exec_path(pod, ["true"]))
    assert code == 400
    assert status["message"] == "cannot exec into a container in a completed pod; current phase is Succeeded"


# --- bounds (the app in-process: the limits are too slow or too big to meet over a socket) ---------------


def _in_process(standin: KubeStandin, path: str) -> Any:
    client = TestClient(standin.app, base_url="https://testserver")
    return client.websocket_connect(path, subprotocols=[V5_PROTOCOL], headers=bearer(ADMIN_TOKEN))


def test_a_cat_whose_stdin_is_never_closed_ends_with_a_timeout_status() -> None:
    standin = KubeStandin(tokens=TOKENS, exec_stdin_timeout_seconds=0.2)
    standin.apply(POD)
    with _in_process(standin, exec_path("web", ["cat"], stdin=True)) as websocket:
        websocket.send_bytes(bytes([STDIN]) + b"partial")
        assert websocket.receive_bytes() == bytes([STDOUT]) + b"partial"
        message = websocket.receive_bytes()
        assert message[0] == ERROR
        assert json.loads(message[1:])["reason"] == "Timeout"


def test_a_message_above_the_limit_closes_the_websocket_with_1009() -> None:
    standin = KubeStandin(tokens=TOKENS)
    standin.apply(POD)
    with _in_process(standin, exec_path("web", ["cat"], stdin=True)) as websocket:
        websocket.send_bytes(bytes([STDIN]) + b"x" * (1 << 20))
        assert websocket.receive()["code"] == 1009


# --- real kubectl -----------------------------------------------------------------------------------------


def test_kubectl_exec_echo_prints_its_arguments(kubectl: Kubectl) -> None:
    created = kubectl("run", "web", "--image=busybox", "--restart=Never")
    assert created.returncode == 0, created.stderr
    result = kubectl("exec", "web", "--", "echo", "hello", "world")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello world\n", "")


def test_kubectl_exec_false_exits_1(kubectl: Kubectl, pod: str) -> None:
    result = kubectl("exec", pod, "--", "false")
    assert result.returncode == 1
    assert "command terminated with exit code 1" in result.stderr


def test_kubectl_exec_exits_with_the_commands_exit_code(kubectl: Kubectl, pod: str) -> None:
    assert kubectl("exec", pod, "--", "sh", "-c", "exit 7").returncode == 7


def test_kubectl_exec_i_sends_stdin_to_cat(kubectl: Kubectl, pod: str) -> None:
    result = subprocess.run(kubectl.args("exec", "-i", pod, "--", "cat"), input="data\n", capture_output=True,
                            text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout) == (0, "data\n"), result.stderr


def test_kubectl_exec_as_a_viewer_is_forbidden(kubectl: Kubectl, pod: str) -> None:
    result = kubectl("exec", pod, "--as", "kaas:alice", "--as-group", "kaas:viewer", "--", "true",
                     token=AGENT_TOKEN)
    assert result.returncode != 0
    # kubectl retries over SPDY after the WebSocket refusal: the HTTP side refuses it the same way
    assert 'User "kaas:alice" cannot create resource "pods/exec"' in result.stderr
