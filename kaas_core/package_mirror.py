"""What a region's package mirror may be: the rules the API applies when an admin sets one and the provider
applies again before a mirror reaches a node's cloud-config (``provider.bootstrap.node_binaries``).

The URL becomes an apt source line (``deb [signed-by=...] <url> /``), where a space, a bracket or a newline
would add options or sources, so only a plain http(s) URL of host, port and path passes; the key must be an
ASCII-armoured OpenPGP public key block.
"""

from __future__ import annotations

import re

MIRROR_URL_MAX = 2048
MIRROR_KEY_MAX = 16 * 1024  # a key block with a few subkeys; the user-data must stay within Nova's limit
MIRROR_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+:-]*)?$"
MIRROR_KEY_PATTERN = (
    r"^-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
    r"[A-Za-z0-9+/=:.,()\- \n]*\n"
    r"-----END PGP PUBLIC KEY BLOCK-----\n?$"
)
_URL = re.compile(MIRROR_URL_PATTERN)
_KEY = re.compile(MIRROR_KEY_PATTERN)


def is_mirror_url(url: str) -> bool:
    return len(url) <= MIRROR_URL_MAX and _URL.match(url) is not None


def is_mirror_key(key: str) -> bool:
    return len(key) <= MIRROR_KEY_MAX and _KEY.match(key) is not None
