"""The ``kaas-agent`` console script: load the config, run the agent until SIGTERM/SIGINT.

Owned by the agent; the composition root of the agent process (the only place that reads the process
environment and installs signal handlers). Everything else lives in ``agents.runtime.run_agent``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence

from agents.config import DEFAULT_CONFIG_PATH, AgentConfigError, load_agent_config
from agents.runtime import AGENT_VERSION, run_agent
from agents.tunnel.loop_lag import LoopLagProbe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaas-agent",
        description="The kaas cluster agent: dials out to kaas and carries kubectl requests to this "
        "cluster's apiserver, and reports the cluster's status.",
    )
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG_PATH),
        help=f"agent config file (default {DEFAULT_CONFIG_PATH}); KAAS_AGENT_* overrides it",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"kaas-agent {AGENT_VERSION}")
    return parser


async def _run(config_path: str) -> None:
    config = load_agent_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    # one per process: a starved agent (a node out of CPU) says so in its log, next to its tunnel's fate
    probe = LoopLagProbe(name="agent loop")
    probe.start()
    try:
        await run_agent(config, stop=stop)
    finally:
        await probe.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # as kaas_core.serving.heap does for the servers: what is imported now lives as long as the process, so
    # no full collection should walk it again (each one stalls every request in flight)
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(_run(args.config))
    except AgentConfigError as exc:
        print(f"kaas-agent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
