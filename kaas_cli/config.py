"""The CLI's own config file: which kaas API to talk to, with which token, in which project.

``kaas up`` and ``kaas login`` write it; every other command reads it. It holds a bearer token, so it is
written with mode 0600. ``KAAS_CLI_CONFIG`` points elsewhere (tests use that).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from kaas_core.settings import default_state_dir


def config_path() -> Path:
    return Path(os.environ.get("KAAS_CLI_CONFIG") or default_state_dir() / "cli.yaml")


@dataclass
class CliConfig:
    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    project: str | None = None
    region: str | None = None
    ca_file: str | None = None  # the CA that signed the API's certificate, when it is not a public one

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx should verify the API's certificate with."""
        if self.ca_file:
            return ssl.create_default_context(cafile=self.ca_file)
        return True

    @classmethod
    def load(cls, path: Path | None = None) -> CliConfig:
        path = path or config_path()
        if not path.exists():
            return cls()
        data = yaml.safe_load(path.read_text()) or {}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path | None = None) -> Path:
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(asdict(self), handle, sort_keys=False)
        path.chmod(0o600)
        return path
