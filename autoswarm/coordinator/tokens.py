"""Bearer tokens: created, listed and revoked here, stored only as sha256 hashes with a scope
and a name."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time

from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.shared.errors import AutoswarmError, InvalidInput, NotFound
from autoswarm.shared.models import Scope

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


# Tokens are named by the first characters of their hash (the token itself is never kept).
TOKEN_ID_CHARS = 12
MIN_TOKEN_ID_CHARS = 8


def list_tokens(store: Store) -> list[dict[str, object]]:
    """Every token: its id (a hash prefix), scope, name, when made, its workers; oldest first."""
    return [
        {
            "token_id": token_hash[:TOKEN_ID_CHARS],
            "scope": record.scope.value,
            "name": record.name,
            "created_s": record.created_s,
            "workers": len(store.token_worker_ids(token_hash)),
        }
        for token_hash, record in store.list_tokens()
    ]


def find_token(store: Store, token_id: str) -> str:
    """The hash a token id (at least 8 characters of it) names; NotFound, or InvalidInput
    when it names several."""
    if len(token_id) < MIN_TOKEN_ID_CHARS:
        raise InvalidInput(f"a token id has at least {MIN_TOKEN_ID_CHARS} characters")
    matches = [h for h, _ in store.list_tokens() if h.startswith(token_id.lower())]
    if not matches:
        raise NotFound(f"no token {token_id}: `autoswarm token list` shows them")
    if len(matches) > 1:
        listed = ", ".join(h[:TOKEN_ID_CHARS] for h in matches)
        raise InvalidInput(f"token id {token_id} is ambiguous ({listed}): give more characters")
    return matches[0]


def revoke_token(store: Store, token_hash: str) -> list[str]:
    """Delete the token (every request with it is refused from now on) and hand its workers'
    leases back to the queue, no attempt counted; the experiments handed back."""
    record = store.get_token(token_hash)
    if record is None:
        raise NotFound("no such token")
    store.revoke_token(token_hash)
    workers = set(store.token_worker_ids(token_hash))
    handed_back = []
    for exp in store.get_experiments(store.leased_experiment_ids()):
        if exp.worker_id not in workers:
            continue
        try:
            store.release(exp.experiment_id, exp.worker_id, exp.fencing_token)
        except AutoswarmError as exc:  # reported or expired meanwhile
            logger.info(
                "token %s: lease of %s not handed back: %s", record.name, exp.experiment_id, exc
            )
            continue
        handed_back.append(exp.experiment_id)
    logger.warning(
        "token %s (%s): revoked; %d leases handed back",
        record.name,
        record.scope.value,
        len(handed_back),
    )
    return handed_back
