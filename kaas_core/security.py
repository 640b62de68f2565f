"""Secrets: generating bearer tokens, hashing them for storage, encrypting what must be read back.

User and kubeconfig tokens are only ever stored as SHA-256 digests (they are 256-bit random, so a plain
digest is enough: no dictionary to attack). Agent tokens must also reach a worker that renders cloud-init,
so they are additionally stored encrypted with a Fernet key derived from ``KAAS_SECRET_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

USER_TOKEN_PREFIX = "kaas_"  # noqa: S105 (a prefix, not a secret)
AGENT_TOKEN_PREFIX = "kaasagent_"  # noqa: S105 (a prefix, not a secret)


def generate_token(prefix: str = USER_TOKEN_PREFIX) -> str:
    """A new random bearer token; the prefix tells user and agent tokens apart at a glance."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SecretBox:
    """Encrypts small secrets at rest with a key derived from the deployment's secret key."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"kaas-secret-box-v1").derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted: was KAAS_SECRET_KEY changed?") from exc
