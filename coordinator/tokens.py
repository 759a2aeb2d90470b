"""Bearer tokens: created here, stored only as sha256 hashes with a scope and a name."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time

from coordinator.settings import CoordinatorSettings
from coordinator.store import Store
from shared.models import Scope

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "as_"
ADMIN_NAME = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: Store, scope: Scope, name: str) -> str:
    """A new random token with this scope; only its hash is kept, so show it once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.put_token(hash_token(token), scope, name, now=time.time())
    logger.info("token %s: created with scope %s", name, scope.value)
    return token


def ensure_admin_token(store: Store, settings: CoordinatorSettings) -> str:
    """The bootstrap admin token: settings' own, else data_dir/admin.token (made once, 0600)."""
    if settings.admin_token is not None:
        token = settings.admin_token.get_secret_value()
    else:
        path = settings.admin_token_file
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(TOKEN_PREFIX + secrets.token_urlsafe(32) + "\n")
            logger.info("admin token: written to %s (mode 0600)", path)
        token = path.read_text().strip()
    if store.get_token(hash_token(token)) is None:
        store.put_token(hash_token(token), Scope.ADMIN, ADMIN_NAME, now=time.time())
    return token
