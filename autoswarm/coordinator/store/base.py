"""The store's connection, its scripts and the encoding of hash fields."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

import redis

from autoswarm.coordinator import keys
from autoswarm.coordinator.models import TaskRecord
from autoswarm.coordinator.store.scripts import Scripts

logger = logging.getLogger(__name__)

FieldValue = str | int | float | bool | None

# What Redis raises while it is away (restarting, loading its file, unreachable): the API
# answers these 503 with Retry-After, the one fault worth retrying unchanged.
UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


def encode_fields(fields: Mapping[str, FieldValue]) -> str:
    """A JSON object of strings for `hset_json` in lib.lua (None reads back as absent)."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        if value is None:
            out[key] = ""
        elif isinstance(value, bool):
            out[key] = "1" if value else "0"
        elif isinstance(value, float):
            out[key] = repr(value)
        else:
            out[key] = str(value)
    return json.dumps(out)


class OutageLog:
    """One log line each time Redis goes away, not one per request it fails (a restart
    fails every request for up to a second): a line once `quiet_s` passed without one."""

    def __init__(self, quiet_s: float = 5.0) -> None:
        self.quiet_s = quiet_s
        self._last = -math.inf
        self._lock = threading.Lock()

    def note(self, where: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            quiet, self._last = now - self._last >= self.quiet_s, now
        if quiet:
            logger.warning(
                "redis: away (%s: %s), first seen by %s; answering 503 until it is back",
                type(exc).__name__,
                exc,
                where,
            )


class StoreBase:
    """One Redis connection pool for text, one for file contents (bytes), the scripts, and
    the task records read so far (a registered task never changes)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._r: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, health_check_interval=30
        )
        self._raw: redis.Redis = redis.Redis.from_url(url, decode_responses=False)
        self._scripts = Scripts(self._r)
        self._tasks: dict[str, TaskRecord] = {}
        self._outages = OutageLog()
        # Tasks whose stored record does not validate, already warned about.
        self._unreadable: set[str] = set()

    def close(self) -> None:
        self._r.close()
        self._raw.close()

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self._r.ping())
        except redis.RedisError:
            return False

    def note_away(self, where: str, exc: BaseException) -> None:
        """Log that Redis is away (an `UNAVAILABLE` error met by `where`): one line per
        outage, no traceback."""
        self._outages.note(where, exc)

    def appendonly_enabled(self) -> bool:
        """Whether the server keeps an append-only file (CONFIG GET; False if not allowed)."""
        try:
            answer = cast("dict[str, str]", self._r.config_get("appendonly"))
        except redis.RedisError as exc:
            logger.warning("redis %s: cannot read its appendonly setting: %s", self.url, exc)
            return False
        return answer.get("appendonly") == "yes"

    def publish_wakeup(self, message: str) -> None:
        """Tell the other API processes (autoswarm.coordinator.relay); lost if Redis is away."""
        self._r.publish(keys.WAKEUPS, message)

    def wakeups(self) -> redis.client.PubSub:
        """A subscription to what `publish_wakeup` sends (the caller closes it)."""
        client: Any = self._r  # redis-py leaves `pubsub` untyped
        pubsub: redis.client.PubSub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(keys.WAKEUPS)
        return pubsub

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args, client=self._r)

    def _hgetall(self, key: str) -> dict[str, str]:
        return cast("dict[str, str]", self._r.hgetall(key))

    def _hgetall_many(self, keys: list[str]) -> list[dict[str, str]]:
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        out: list[dict[str, str]] = pipe.execute()
        return out
