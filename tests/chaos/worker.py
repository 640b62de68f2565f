"""``python -m tests.chaos.worker ...``: ``kaas worker ...``, which can be told to die just before a tag.

Test infrastructure of the chaos rig (``tests.chaos.rig``): every worker of the rig runs through it. With
``KAAS_CHAOS_DIE_BEFORE_TAG`` set to a path, the first worker about to send a tag request (``PUT
/v2.0/<collection>/<id>/tags``) while a file exists at that path claims it (an atomic rename to
``<path>.fired``, so exactly one worker does), writes its pid and the time there and SIGKILLs itself: no
``finally``, no cleanup, the resource created and never tagged, as a worker the kernel killed between
the two calls would leave it. The cut is made in the HTTP client (requests' adapter, which openstacksdk
uses), so it works against any cloud; nothing of kaas itself is changed. Otherwise it is ``kaas worker``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

TRIGGER_ENV = "KAAS_CHAOS_DIE_BEFORE_TAG"
TAG_PATH = re.compile(r"/v2\.0/[a-z_-]+/[^/]+/tags(/[^/]+)?$")

_send = HTTPAdapter.send


def _send_or_die(self: HTTPAdapter, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
    trigger = os.environ.get(TRIGGER_ENV)
    path = urlsplit(request.url or "").path
    if trigger and request.method == "PUT" and TAG_PATH.search(path):
        fired = Path(f"{trigger}.fired")
        try:
            os.rename(trigger, fired)
        except FileNotFoundError:
            pass  # not armed, or another worker took it
        else:
            fired.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "path": path}))
            os.kill(os.getpid(), signal.SIGKILL)
    response: Response = _send(self, request, *args, **kwargs)
    return response


def main() -> None:
    HTTPAdapter.send = _send_or_die  # type: ignore[method-assign]
    from kaas_cli.main import app

    app(prog_name="kaas")


if __name__ == "__main__":
    main()
