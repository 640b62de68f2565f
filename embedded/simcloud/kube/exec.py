"""``kubectl exec`` over WebSocket: the ``pods/{name}/exec`` subresource as kube-apiserver >=1.30 serves it.

Owned by the Kubernetes stand-in. ``KubeStandin`` routes the WebSocket handshake on ``EXEC_PATH`` to
``PodExec.serve`` and calls ``PodExec.validate`` for a plain HTTP request on the same path (kubectl's SPDY
fallback), so both answer the same refusals. There are no containers: ``emulate`` plays a few commands.

The channel protocol is client-go's (``tools/remotecommand``): every message is binary and its first byte is
the channel: 0 stdin (client to server), 1 stdout, 2 stderr, 3 error, 4 resize (ignored here). Channel 3
carries one JSON ``Status`` at the end; client-go reads it until the WebSocket closes, and turns reason
``NonZeroExitCode`` with an ``ExitCode`` cause into kubectl's exit code. ``v5.channel.k8s.io`` adds channel
255, "close": ``[255, 0]`` says the client closed stdin. client-go sends it whichever version was
negotiated, so it ends stdin under v4 too.

A refusal (401, 403, 404, 400) is an HTTP answer to the handshake with a ``Status`` body, which client-go
decodes; kubectl then retries over SPDY, which the HTTP side refuses with the same checks. Bounds: messages
longer than ``max_message_bytes`` close the connection (1009), a ``cat`` whose stdin is not closed within
``stdin_timeout_seconds`` ends with a Timeout status, and the final sends give up after
``SEND_TIMEOUT_SECONDS`` on a client that does not read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from simcloud.kube import errors, resources
from simcloud.kube.identity import Identity
from simcloud.kube.rbac import Attributes
from simcloud.kube.store import ObjectStore

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

EXEC_PATH = "/api/v1/namespaces/{namespace}/pods/{name}/exec"
EXEC_NOT_OVER_SPDY = "the stand-in serves exec only over WebSocket (v5.channel.k8s.io), not SPDY"
V5_PROTOCOL = "v5.channel.k8s.io"
V4_PROTOCOL = "v4.channel.k8s.io"
SUPPORTED_PROTOCOLS = (V5_PROTOCOL, V4_PROTOCOL)  # in order of preference
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

# client-go sends at most 32 KiB (+1 channel byte) a message; uvicorn is given the same limit.
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_STDIN_TIMEOUT_SECONDS = 60.0
SEND_TIMEOUT_SECONDS = 10.0
CLOSE_MESSAGE_TOO_BIG = 1009
DENIAL_EXTENSION = "websocket.http.response"
COMPLETED_PHASES = ("Succeeded", "Failed")
# runc's exit code for an executable it cannot start (kubectl: "command terminated with exit code 126").
CANNOT_EXECUTE = 126
_SHELL_EXIT = re.compile(r"\s*exit(?:\s+(\d{1,3}))?\s*")

Identify = Callable[[Headers], Identity]
Authorize = Callable[[Attributes], None]
Write = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class ExecOptions:
    """The query of an exec request (``PodExecOptions``), the container resolved against the pod."""

    command: tuple[str, ...]
    container: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass(frozen=True)
class Outcome:
    """What an emulated command does: its fixed output and exit code, and whether it copies stdin first."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    copies_stdin: bool = False


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """The best of ``SUPPORTED_PROTOCOLS`` the client offered, or None."""
    return next((protocol for protocol in SUPPORTED_PROTOCOLS if protocol in offered), None)


def emulate(command: Sequence[str]) -> Outcome:
    """``echo``, ``cat``, ``true``, ``false`` and ``sh -c "exit N"``; anything else is not on the PATH."""
    name, args = command[0], list(command[1:])
    if name == "echo":
        return Outcome(stdout=(" ".join(args) + "\n").encode())
    if name == "cat" and not args:
        return Outcome(copies_stdin=True)
    if name == "true" and not args:
        return Outcome()
    if name == "false" and not args:
        return Outcome(exit_code=1)
    if name == "sh" and len(args) == 2 and args[0] == "-c":
        match = _SHELL_EXIT.fullmatch(args[1])
        exit_code = int(match.group(1) or 0) if match else None
        if exit_code is not None and exit_code <= 255:
            return Outcome(exit_code=exit_code)
    message = (
        "OCI runtime exec failed: exec failed: unable to start container process: "
        f'exec: "{name}": executable file not found in $PATH: unknown\n'
    )
    return Outcome(stderr=message.encode(), exit_code=CANNOT_EXECUTE)


def exit_status(command: Sequence[str], exit_code: int) -> Obj:
    """The error channel's ``Status`` for a command that ended, worded as the kubelet words it."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: "
            f"error executing command [{' '.join(command)}], exit code {exit_code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def parse_options(query: QueryParams, pod: Obj) -> ExecOptions:
    """Validate the query against the pod like kube-apiserver (400 for what it refuses)."""
    name = pod["metadata"]["name"]
    command = tuple(query.getlist("command"))
    if not command:
        raise errors.bad_request("you must specify at least one command for the container")
    flags = {key: query.get(key, "").lower() in ("true", "1") for key in ("stdin", "stdout", "stderr", "tty")}
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    phase = (pod.get("status") or {}).get("phase", "")
    if phase in COMPLETED_PHASES:
        raise errors.bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
    return ExecOptions(command=command, container=_container(pod, query.get("container", ""), name), **flags)


def _container(pod: Obj, requested: str, pod_name: str) -> str:
    names: list[str] = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    if requested:
        if requested not in names:
            raise errors.bad_request(f"container {requested} is not valid for pod {pod_name}")
        return requested
    if len(names) == 1:
        return names[0]
    raise errors.bad_request(
        f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(names)}]"
    )


class _MessageTooBig(Exception):
    pass


class PodExec:
    """Serves exec WebSockets; authentication and authorization are the stand-in's own (passed in)."""

    def __init__(
        self,
        *,
        identify: Identify,
        authorize: Authorize,
        store: ObjectStore,
        stdin_timeout_seconds: float = DEFAULT_STDIN_TIMEOUT_SECONDS,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._identify = identify
        self._authorize = authorize
        self._store = store
        self._stdin_timeout_seconds = stdin_timeout_seconds
        self._max_message_bytes = max_message_bytes
        pods = resources.find("", "v1", "pods")
        assert pods is not None
        self._pods = pods

    def validate(self, namespace: str, name: str, query: QueryParams) -> ExecOptions:
        """The options of an authorized exec request on a stored pod; 404 or 400 otherwise."""
        return parse_options(query, self._store.get(self._pods, namespace, name))

    async def serve(self, websocket: WebSocket) -> None:
        """The ``WebSocketRoute`` endpoint: refuse the handshake, or accept it and run the command."""
        try:
            protocol, options = self._admit(websocket)
        except errors.KubeStatusError as exc:
            await _deny(websocket, exc)
            return
        except Exception as exc:
            logger.exception("kube stand-in failed on the exec handshake %s", websocket.url.path)
            await _deny(websocket, errors.internal_error(str(exc)))
            return
        await websocket.accept(subprotocol=protocol)
        try:
            await self._run(websocket, options)
        except WebSocketDisconnect:
            pass  # the client went away: there is nobody to tell how the command ended

    def _admit(self, websocket: WebSocket) -> tuple[str, ExecOptions]:
        identity = self._identify(websocket.headers)
        namespace, name = websocket.path_params["namespace"], websocket.path_params["name"]
        self._authorize(Attributes(identity=identity, verb="create", resource="pods", subresource="exec",
                                   name=name, namespace=namespace))
        options = self.validate(namespace, name, websocket.query_params)
        protocol = select_subprotocol(websocket.scope.get("subprotocols") or [])
        if protocol is None:
            raise errors.bad_request(
                f"the WebSocket must offer one of the subprotocols {', '.join(SUPPORTED_PROTOCOLS)}"
            )
        return protocol, options

    async def _run(self, websocket: WebSocket, options: ExecOptions) -> None:
        outcome = emulate(options.command)

        async def write(channel: int, data: bytes) -> None:
            if data:
                await websocket.send_bytes(bytes([channel]) + data)

        async def stdout(data: bytes) -> None:
            if options.stdout:
                await write(STDOUT, data)

        async def stderr(data: bytes) -> None:  # a TTY has no stderr: it all goes to the terminal
            if options.stderr or options.tty:
                await write(STDOUT if options.tty else STDERR, data)

        status = exit_status(options.command, outcome.exit_code)
        if outcome.copies_stdin and options.stdin:
            try:
                async with asyncio.timeout(self._stdin_timeout_seconds):
                    if not await self._copy_stdin(websocket, stdout):
                        return  # disconnected before closing stdin
            except TimeoutError:
                status = errors.timeout(
                    f"stdin was not closed within {self._stdin_timeout_seconds:g}s"
                ).to_status()
            except _MessageTooBig:
                await websocket.close(CLOSE_MESSAGE_TOO_BIG)
                return
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await stdout(outcome.stdout)
                await stderr(outcome.stderr)
                await write(ERROR, json.dumps(status).encode())
                await websocket.close()
        except TimeoutError:
            logger.warning("exec client on %s did not read its output; dropped it", websocket.url.path)

    async def _copy_stdin(self, websocket: WebSocket, stdout: Write) -> bool:
        """Echo stdin to stdout until the client closes stdin (True) or the WebSocket (False)."""
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return False
            data: bytes = message.get("bytes") or (message.get("text") or "").encode()
            if len(data) > self._max_message_bytes:
                raise _MessageTooBig
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN:
                await stdout(payload)
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                return True
            # resize and unknown channels are ignored, as by a container without a TTY


async def _deny(websocket: WebSocket, error: errors.KubeStatusError) -> None:
    """Answer the handshake with the error's ``Status``, if the server can send an HTTP answer."""
    if DENIAL_EXTENSION not in websocket.scope.get("extensions", {}):
        await websocket.close()  # the ASGI server then refuses the handshake with a bare 403
        return
    body = json.dumps(error.to_status())
    response = Response(body, status_code=error.code, media_type="application/json")
    await websocket.send_denial_response(response)
