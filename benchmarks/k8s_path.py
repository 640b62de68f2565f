"""k8s-path benchmark: kubectl-style requests to a REAL kube-apiserver through kaas, beside the anchors that
say what a proxy or a tunnel costs anyway: direct, nginx (a plain one-hop reverse proxy: the floor),
Rancher's remotedialer (a WebSocket tunnel like kaas's, in Go) and Konnectivity (when the Go module proxy
serves it), all measured in the same run.

    .venv/bin/python benchmarks/k8s_path.py --quick       # 200 GETs, 16 MiB LIST, 50 watches: under 2 minutes
    .venv/bin/python benchmarks/k8s_path.py               # 2000 GETs, 64 MiB LIST, 200 watches
    .venv/bin/python benchmarks/k8s_path.py --without-kaas   # the anchors alone

One real control plane (``nodesim.kube_real.start_control_plane``: etcd, kube-apiserver and its components,
from ``scripts/kube-bin.sh``'s programs), and every route pointed at the apiserver's own port; the routes
and how they authenticate are in ``benchmarks/_k8s_routes.py``. Test objects: namespace ``k8s-path`` with
N ConfigMaps of ~1 MiB (the LIST), namespace ``k8s-path-watch`` (the watches).

What is measured, per route:
1. Small GET ``/api/v1/namespaces/default``: p50/p99 of sequential requests on one keep-alive connection,
   after a warm-up.
2. LIST of the N x 1 MiB ConfigMaps, the body read raw (``Accept-Encoding: identity``): MB/s, best of 3.
3. Watches: W concurrent ``?watch=1`` on ConfigMaps of ``k8s-path-watch``, held open through the route
   (each from the list's resourceVersion); once every watch has its response head, a writer (direct, so
   the write path is the same for every route) creates E/2 small ConfigMaps, then updates each once, one
   write at a time, the next once every watch got the last event (or after 10 s). Per-event latency: from
   the write's REQUEST to a watcher reading the event; p50/p99 over all watchers and events. Not from the
   write's response: direct, a watcher often reads the event before the writer reads its response (the
   apiserver sends both at once), so that figure goes negative and no ratio can be made of it; the write's
   own round trip (direct for every route) is printed beside, to subtract. A watch that did not open, or an
   event a watcher never got, is counted and printed.
The table gives each route's figures and its ratio to direct (latency: route/direct; throughput:
route/direct). The client is Python (httpx) in this process for every route, so its own cost is in every
row alike.

Everything binds 127.0.0.1 on OS-picked ports (nginx: a port the OS picked a moment before); everything
started is stopped at the end, also on Ctrl-C/SIGTERM, and the kaas route's database is dropped and its
Redis database (KAAS_TEST_REDIS_URL, default 13) flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._k8s_routes import (  # noqa: E402
    Route,
    RouteUnavailable,
    Upstream,
    direct_route,
    kaas_route,
    konnectivity_refusal,
    nginx_route,
    remotedialer_route,
)
from benchmarks._rows import Row as BenchRow  # noqa: E402
from benchmarks._rows import record  # noqa: E402
from benchmarks.tunnel import percentile  # noqa: E402
from nodesim.kube_real import start_control_plane, write_cluster_pki  # noqa: E402
from nodesim.kube_releases import built_releases, is_complete_release, kube_cache_dir  # noqa: E402

SMALL_GET = "/api/v1/namespaces/default"
LIST_NAMESPACE = "k8s-path"
WATCH_NAMESPACE = "k8s-path-watch"
CONFIGMAP_DATA_BYTES = 1024 * 1024 - 4096  # a ConfigMap holds at most 1 MiB; leave room for metadata
EVENT_WAIT_SECONDS = 10.0
WATCH_OPEN_SECONDS = 30.0


@dataclass(frozen=True)
class Sizes:
    gets: int
    warmup: int
    list_mib: int
    watchers: int
    events: int  # writes: half creates, half updates


FULL = Sizes(gets=2000, warmup=200, list_mib=64, watchers=200, events=40)
QUICK = Sizes(gets=200, warmup=50, list_mib=16, watchers=50, events=20)


# --- measurements ---------------------------------------------------------------------------------------


def measure_latency(route: Route, *, count: int, warmup: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``count`` sequential small GETs on one keep-alive connection."""
    samples: list[float] = []
    with route.client(timeout=30) as client:
        for index in range(warmup + count):
            started = time.perf_counter()
            response = client.get(route.prefix + SMALL_GET)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(
                    f"{route.name}: GET {SMALL_GET} → {response.status_code} {response.text[:300]}"
                )
            if index >= warmup:
                samples.append(elapsed * 1000)
    return percentile(samples, 0.50), percentile(samples, 0.99)


def measure_throughput(route: Route, *, expected_bytes: int, rounds: int = 3) -> float:
    """Best of ``rounds`` MB/s (10^6 bytes) of the big LIST, read raw, from the request to the last byte."""
    best = 0.0
    path = f"{route.prefix}/api/v1/namespaces/{LIST_NAMESPACE}/configmaps"
    with route.client(
        timeout=300, headers={"Accept-Encoding": "identity", "Accept": "application/json"}
    ) as client:
        for _ in range(rounds):
            received = 0
            started = time.perf_counter()
            with client.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    raise RuntimeError(f"{route.name}: LIST → {response.status_code} {response.text[:300]}")
                for chunk in response.iter_raw(chunk_size=1024 * 1024):
                    received += len(chunk)
            elapsed = time.perf_counter() - started
            if received < expected_bytes:
                raise RuntimeError(f"{route.name}: LIST body {received} bytes, expected ≥ {expected_bytes}")
            best = max(best, received / elapsed / 1e6)
    return best


@dataclass(frozen=True)
class WatchResult:
    opened: int
    wanted: int
    samples: list[float]  # milliseconds from the write's request to a watcher's read, each that arrived
    writes: list[float]  # milliseconds of each write's round trip (direct, the same path for every route)
    missed: int  # (watcher, event) pairs that did not arrive within EVENT_WAIT_SECONDS
    open_errors: list[str]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 0.50) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99) if self.samples else float("nan")

    @property
    def write_p50(self) -> float:
        return percentile(self.writes, 0.50) if self.writes else float("nan")


class _Arrivals:
    """When each watcher read each event (keyed by object name and resourceVersion), and who waits for a
    key to have reached every open watcher."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self._complete: dict[str, asyncio.Event] = {}
        self.expected = 0

    def complete(self, key: str) -> asyncio.Event:
        return self._complete.setdefault(key, asyncio.Event())

    def arrived(self, key: str, at: float) -> None:
        self.times[key].append(at)
        if len(self.times[key]) >= self.expected:
            self.complete(key).set()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _watch(
    route: Route, target: str, *, opened: asyncio.Future[str | None], arrivals: _Arrivals
) -> None:
    """One watch on its own connection, read with bare asyncio streams rather than httpx, to keep the
    client's own cost per event small: with hundreds of watchers on one loop, each event read waits for
    the ones read before it, and that wait is the client's, not the route's. Each chunk is timed as it is
    read; events are the lines of the chunked body."""
    url = httpx.URL(route.base_url)
    context = route.verify if isinstance(route.verify, ssl.SSLContext) else None
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(url.host, url.port, ssl=context)
        lines = [f"GET {target} HTTP/1.1", f"Host: {url.host}:{url.port}", "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in route.headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, headers = await _read_head(reader)
        if status != 200:
            body = await asyncio.wait_for(reader.read(300), timeout=5)
            opened.set_result(f"{status} {body.decode(errors='replace')}")
            return
        if headers.get("transfer-encoding", "").lower() != "chunked":
            opened.set_result(f"a watch answered without chunked encoding: {headers}")
            return
        opened.set_result(None)
        pending = b""
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size + 2)
            now = time.perf_counter()
            pending += chunk[:-2]
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    metadata = json.loads(line)["object"]["metadata"]
                    arrivals.arrived(f"{metadata['name']}@{metadata['resourceVersion']}", now)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        if not opened.done():
            opened.set_result(f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.transport.abort()


async def _watch_latency(
    route: Route, writer: Upstream, *, watchers: int, events: int, namespace: str
) -> WatchResult:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    path = route.prefix + base
    arrivals = _Arrivals()
    async with httpx.AsyncClient(
        base_url=writer.url, verify=writer.ssl_context(), timeout=30, trust_env=False
    ) as write:
        listing = (await write.get(base)).raise_for_status().json()
        query = urlencode(
            {
                "watch": "1",
                "resourceVersion": listing["metadata"]["resourceVersion"],
                "allowWatchBookmarks": "false",
            }
        )
        target = f"{path}?{query}"
        loop = asyncio.get_running_loop()
        opened: list[asyncio.Future[str | None]] = [loop.create_future() for _ in range(watchers)]
        tasks = [
            asyncio.create_task(_watch(route, target, opened=future, arrivals=arrivals)) for future in opened
        ]
        try:
            done, _pending = await asyncio.wait(opened, timeout=WATCH_OPEN_SECONDS)
            errors = [str(future.result()) for future in done if future.result() is not None]
            open_count = sum(1 for future in done if future.result() is None)
            arrivals.expected = open_count
            samples: list[float] = []
            writes_ms: list[float] = []
            missed = 0
            names = [f"ev-{index}" for index in range(events // 2)]
            writes = [("create", name) for name in names] + [("update", name) for name in names]
            for kind, name in writes:
                sent_at = time.perf_counter()
                if kind == "create":
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": name},
                        "data": {"v": "0"},
                    }
                    response = await write.post(base, json=body)
                else:
                    response = await write.patch(
                        f"{base}/{name}",
                        content=b'{"data": {"v": "1"}}',
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
                writes_ms.append((time.perf_counter() - sent_at) * 1000)
                response.raise_for_status()
                key = f"{name}@{response.json()['metadata']['resourceVersion']}"
                if open_count:
                    try:
                        await asyncio.wait_for(arrivals.complete(key).wait(), timeout=EVENT_WAIT_SECONDS)
                    except TimeoutError:
                        pass
                got = arrivals.times.get(key, [])
                missed += open_count - len(got)
                samples.extend((at - sent_at) * 1000 for at in got)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with_errors = errors + [f"not open after {WATCH_OPEN_SECONDS:.0f} s"] * (watchers - len(done))
    return WatchResult(
        opened=open_count,
        wanted=watchers,
        samples=samples,
        writes=writes_ms,
        missed=missed,
        open_errors=with_errors,
    )


def measure_watch_latency(
    route: Route, writer: Upstream, *, watchers: int, events: int, namespace: str = WATCH_NAMESPACE
) -> WatchResult:
    """Measurement 3 (see the module doc); ``namespace`` must exist and hold no ``ev-*`` ConfigMap."""
    return asyncio.run(_watch_latency(route, writer, watchers=watchers, events=events, namespace=namespace))


# --- the cluster's objects -----------------------------------------------------------------------------


def create_objects(upstream: Upstream, *, list_mib: int) -> int:
    """The two namespaces and ``list_mib`` ConfigMaps of ~1 MiB in the first; returns their data bytes."""
    data = "x" * CONFIGMAP_DATA_BYTES
    with upstream.admin_client() as admin:
        for namespace in (LIST_NAMESPACE, WATCH_NAMESPACE):
            created = admin.post(
                "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
            if created.status_code != 201:
                raise RuntimeError(f"namespace {namespace}: {created.status_code} {created.text[:300]}")
        for index in range(list_mib):
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"big-{index:03d}"},
                "data": {"blob": data},
            }
            response = admin.post(f"/api/v1/namespaces/{LIST_NAMESPACE}/configmaps", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"a ConfigMap: {response.status_code} {response.text[:300]}")
    return list_mib * CONFIGMAP_DATA_BYTES


def clear_watch_namespace(upstream: Upstream) -> None:
    """The previous route's ``ev-*`` ConfigMaps go, so every route's writer creates the same objects."""
    with upstream.admin_client() as admin:
        admin.delete(f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps").raise_for_status()


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Row:
    route: str
    note: str = ""
    skipped: str = ""  # why there are no figures
    get: tuple[float, float] | None = None
    list_mbps: float | None = None
    watch: WatchResult | None = None


def kube_bin_dir(version: str | None) -> Path:
    """``KAAS_KUBE_BIN_DIR`` (as the tests use it), else ``scripts/kube-bin.sh``'s cache: ``version`` or
    the newest."""
    override = os.environ.get("KAAS_KUBE_BIN_DIR")
    if override and version is None and is_complete_release(Path(override)):
        return Path(override)
    releases = built_releases(kube_cache_dir(os.environ, home=Path.home()))
    if not releases:
        raise SystemExit("no real Kubernetes programs: run bash scripts/kube-bin.sh")
    if version is not None and version not in releases:
        raise SystemExit(f"Kubernetes {version} is not built (built: {', '.join(releases)})")
    return releases[version or list(releases)[-1]]


def measure_route(
    route: Route, upstream: Upstream, sizes: Sizes, *, data_bytes: int, say: Callable[[str], None]
) -> Row:
    row = Row(route.name, note=route.note)
    say(f"  {route.name}: small GETs ...")
    row.get = measure_latency(route, count=sizes.gets, warmup=sizes.warmup)
    say(f"  {route.name}: LIST ...")
    row.list_mbps = measure_throughput(route, expected_bytes=data_bytes)
    say(f"  {route.name}: {sizes.watchers} watches, {sizes.events} events ...")
    clear_watch_namespace(upstream)
    row.watch = measure_watch_latency(route, upstream, watchers=sizes.watchers, events=sizes.events)
    return row


def ratio(value: float, direct: float) -> str:
    return f"{value / direct:5.2f}x" if direct > 0 else "  -  "


@dataclass(frozen=True)
class Figures:
    get: tuple[float, float]
    list_mbps: float
    watch: WatchResult


def figures(row: Row) -> Figures:
    if row.get is None or row.list_mbps is None or row.watch is None:
        raise ValueError(f"{row.route} was not measured")
    return Figures(get=row.get, list_mbps=row.list_mbps, watch=row.watch)


def table(rows: list[Row], sizes: Sizes, *, data_bytes: int) -> list[str]:
    direct = figures(rows[0])
    lines = [
        f"1. GET {SMALL_GET}, {sizes.gets} sequential after {sizes.warmup} warm-up (ms)",
        f"2. LIST of {sizes.list_mib} ConfigMaps x ~1 MiB ({data_bytes / 1e6:.0f} MB of data), raw, "
        "best of 3 (MB/s)",
        f"3. {sizes.watchers} watches, {sizes.events} events, write request → watcher read (ms; "
        "'write': the write's own round trip, p50)",
        "",
        f"{'route':<13} {'GET p50':>8} {'x':>6} {'p99':>7} {'x':>6} | {'LIST MB/s':>9} {'x':>6} | "
        f"{'watch p50':>9} {'x':>6} {'p99':>7} {'x':>6} {'write':>6} {'open':>8} {'missed':>6}",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"{row.route:<13} {row.skipped}")
            continue
        got = figures(row)
        watch = got.watch
        opened = f"{watch.opened}/{watch.wanted}"
        lines.append(
            f"{row.route:<13} {got.get[0]:8.2f} {ratio(got.get[0], direct.get[0]):>6} {got.get[1]:7.2f} "
            f"{ratio(got.get[1], direct.get[1]):>6} | "
            f"{got.list_mbps:9.1f} {ratio(got.list_mbps, direct.list_mbps):>6} | "
            f"{watch.p50:9.2f} {ratio(watch.p50, direct.watch.p50):>6} {watch.p99:7.2f} "
            f"{ratio(watch.p99, direct.watch.p99):>6} {watch.write_p50:6.2f} {opened:>8} {watch.missed:6d}"
        )
    lines.append("")
    for row in rows:
        if row.note:
            lines.append(f"  {row.route}: {row.note}")
        if row.watch is not None and row.watch.open_errors:
            first = sorted(set(row.watch.open_errors))[:3]
            lines.append(
                f"  {row.route}: {len(row.watch.open_errors)} watches did not open: {'; '.join(first)}"
            )
    return lines


def record_rows(rows: list[Row], sizes: Sizes) -> None:
    """The rows of issue 13's table (``benchmarks/fleet.py``): each measured route against direct, kaas's
    with the issue's goals, the anchors' as the floor to compare with."""
    direct = figures(rows[0])
    scale = f"{sizes.list_mib} MiB"
    for row in rows[1:]:
        if row.skipped:
            continue
        got = figures(row)
        ours = row.route == "kaas"
        who = "through kaas" if ours else ("through the API" if row.route == "kaas API" else row.route)
        watches = f"{got.watch.opened}/{got.watch.wanted} watches open, {got.watch.missed} events missed"
        all_open = got.watch.opened == got.watch.wanted and got.watch.missed == 0
        record(
            BenchRow(
                key=f"k8s.get.p50.{row.route}",
                label=f"small GET p50, {who} / direct",
                ours=got.get[0],
                baseline=direct.get[0],
                unit="ms",
                goal="≤ 2x" if ours else "",
                met=got.get[0] <= 2 * direct.get[0] if ours else None,
            ),
            BenchRow(
                key=f"k8s.get.p99.{row.route}",
                label=f"small GET p99, {who} / direct",
                ours=got.get[1],
                baseline=direct.get[1],
                unit="ms",
                goal="≤ 3x" if ours else "",
                met=got.get[1] <= 3 * direct.get[1] if ours else None,
            ),
            BenchRow(
                key=f"k8s.list.{row.route}",
                label=f"{scale} LIST throughput, {who} / direct",
                ours=got.list_mbps,
                baseline=direct.list_mbps,
                unit="MB/s",
                goal="≥ 0.8x" if ours else "",
                met=got.list_mbps >= 0.8 * direct.list_mbps if ours else None,
            ),
            BenchRow(
                key=f"k8s.watch.p99.{row.route}",
                label=f"{sizes.watchers} watches, event p99, {who} / direct",
                ours=got.watch.p99,
                baseline=direct.watch.p99,
                unit="ms",
                goal="≤ 2x" if ours else "",
                met=(got.watch.p99 <= 2 * direct.watch.p99 and all_open) if ours else None,
                detail=watches,
            ),
        )


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    with_kaas: bool
    version: str | None


def run(options: Options, workdir: Path, say: Callable[[str], None]) -> list[Row]:
    sizes = options.sizes
    bin_dir = kube_bin_dir(options.version)
    load = os.getloadavg()[0]
    say(
        f"k8s-path benchmark ({'quick' if sizes is QUICK else 'full'}): Kubernetes {bin_dir.name}, "
        f"load average {load:.1f} on {os.cpu_count()} cores; everything on 127.0.0.1"
    )
    rows: list[Row] = []
    with ExitStack() as stack:
        say("starting a real control plane ...")
        pki = workdir / "pki"
        write_cluster_pki(pki)
        control_plane = stack.enter_context(
            start_control_plane(bin_dir=bin_dir, pki_dir=pki, work_dir=workdir / "cp")
        )
        apiserver = next(iter(control_plane.apiservers.values()))
        upstream = Upstream(
            url=apiserver.url,
            ca_file=pki / "ca.crt",
            cert_file=control_plane.work_dir / "pki" / "admin.crt",
            key_file=control_plane.work_dir / "pki" / "admin.key",
        )
        say(f"creating {sizes.list_mib} ConfigMaps of ~1 MiB ...")
        data_bytes = create_objects(upstream, list_mib=sizes.list_mib)

        starters: list[tuple[str, Callable[[], AbstractContextManager[Route]]]] = [
            ("nginx", lambda: nginx_route(upstream, workdir)),
            ("remotedialer", lambda: remotedialer_route(upstream, workdir)),
        ]
        rows.append(measure_route(direct_route(upstream), upstream, sizes, data_bytes=data_bytes, say=say))
        for name, start in starters:
            say(f"starting {name} ...")
            try:
                with start() as route:
                    rows.append(measure_route(route, upstream, sizes, data_bytes=data_bytes, say=say))
            except RouteUnavailable as exc:
                rows.append(Row(name, skipped=str(exc)))
        refusal = konnectivity_refusal()
        rows.append(
            Row("konnectivity", skipped=refusal or "served by the Go module proxy, but not built here")
        )
        if options.with_kaas:
            say("starting kaas (tunnel server, API, agent) ...")
            with kaas_route(upstream, workdir) as kaas_routes:
                for route in kaas_routes:
                    rows.append(measure_route(route, upstream, sizes, data_bytes=data_bytes, say=say))
        say("stopping everything ...")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 GETs, 16 MiB LIST, 50 watches, 20 events")
    parser.add_argument(
        "--without-kaas", action="store_true", help="the anchors alone (no PostgreSQL, Redis)"
    )
    parser.add_argument("--version", default=None, help="a built Kubernetes release (default: the newest)")
    args = parser.parse_args()
    options = Options(
        sizes=QUICK if args.quick else FULL, with_kaas=not args.without_kaas, version=args.version
    )
    # SIGTERM unwinds like Ctrl-C, so every process is stopped and the database dropped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="kaas-bench-k8s-path-"))

    def say(text: str) -> None:
        print(text, flush=True)

    started = time.monotonic()
    try:
        rows = run(options, workdir, say)
    except KeyboardInterrupt:
        print(f"interrupted; everything stopped (logs: {workdir})", file=sys.stderr)
        sys.exit(130)
    finally:
        # the logs stay; etcd's data (the ConfigMaps, up to 200 MB) goes
        shutil.rmtree(workdir / "cp" / "etcd", ignore_errors=True)
    say("")
    for line in table(rows, options.sizes, data_bytes=options.sizes.list_mib * CONFIGMAP_DATA_BYTES):
        say(line)
    record_rows(rows, options.sizes)
    say(f"\n{time.monotonic() - started:.0f} s in all; logs of every process: {workdir}")


if __name__ == "__main__":
    main()
