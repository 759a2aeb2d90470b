"""The typed HTTP client of the coordinator's API (docs/protocol.md); the one module with httpx.

Workers, proposers and the CLI reach the coordinator only through `CoordinatorClient`.

What it guarantees:
- every endpoint of docs/protocol.md has one method taking and returning the models of
  `autoswarm.shared.models`; every request body is built by the wire model the coordinator
  parses it with (`autoswarm.shared.wire`, `autoswarm.shared.models`): a value it would refuse
  raises `InvalidInput` before anything is sent; answers are validated, a malformed one raises
  `InvalidInput`;
- an HTTP error becomes one exception of `autoswarm.shared.errors`: 400/422 `InvalidInput`,
  401 `Unauthorized`, 403 `Forbidden`, 404 `NotFound`, 409 `Conflict` (`StaleLease` on the
  lease endpoints: heartbeat, release, report), 413 `PayloadTooLarge`, 429 `TooMany`; the
  coordinator's `detail` is the message;
- a coordinator that cannot be reached (refused, reset, timed out, or answering 5xx) raises
  `CoordinatorUnavailable`, the one error worth retrying later;
- `fetch_bundle` returns files whose `hash_files` equals the hash asked for, or raises
  `BundleMismatch`; paths are checked to stay inside a task folder;
- it is safe to share between threads (httpx's connection pool is).

What it does not do: retry (callers choose their back-off), cache, or know whether a request
that timed out took effect (a report that timed out may have been recorded: the coordinator
accepts each result once, so sending it again is safe).
"""

from __future__ import annotations

import base64
import binascii
import functools
import ssl
from pathlib import PurePosixPath
from typing import Any, NoReturn, TypeVar

import certifi
import httpx
from pydantic import BaseModel, ValidationError

from autoswarm.shared.errors import (
    AutoswarmError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StaleLease,
    TooMany,
    Unauthorized,
)
from autoswarm.shared.models import (
    HeartbeatAnswer,
    HypothesisCreate,
    Lease,
    ProposerContext,
    ResultReport,
    ResultSubmit,
    SpendReport,
    TaskCreate,
    TokenCreate,
    WorkerCreate,
    WorkerSummary,
)
from autoswarm.shared.task import hash_files
from autoswarm.shared.wire import HeartbeatRequest, LeaseAction, LeaseRequest

API_PREFIX = "/api/v1"
_TIME_KEYS = ("time_s", "time", "server_time")
_M = TypeVar("_M", bound=BaseModel)

_STATUS_ERRORS: dict[int, type[AutoswarmError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    429: TooMany,
}


class CoordinatorUnavailable(AutoswarmError):
    """The coordinator cannot be reached or answered 5xx; try again later."""


class BundleMismatch(AutoswarmError):
    """A bundle's content does not hash to the hash it was asked by, or names a bad path."""


def check_bundle_path(path: str) -> str:
    """`path` if it stays inside a task folder; `BundleMismatch` otherwise."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or "\0" in path:
        raise BundleMismatch(f"bundle path {path!r} escapes the task folder")
    return path


def decode_bundle(bundle_hash: str, body: Any) -> dict[str, bytes]:
    """The files of a bundle answer `{"bundle_hash", "files": {path: base64}}`, verified."""
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict):
        raise BundleMismatch(f"bundle {bundle_hash}: answer has no files")
    files: dict[str, bytes] = {}
    for path, encoded in body["files"].items():
        if not isinstance(encoded, str):
            raise BundleMismatch(f"bundle {bundle_hash}: {path!r} is not base64 text")
        try:
            files[check_bundle_path(path)] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise BundleMismatch(f"bundle {bundle_hash}: {path!r} is not base64") from None
    actual = hash_files(files)
    if actual != bundle_hash:
        raise BundleMismatch(f"bundle {bundle_hash}: content hashes to {actual}")
    return files


def _raise_for(response: httpx.Response, *, stale_on_conflict: bool = False) -> NoReturn:
    detail = response.text[:500]
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or body.get("error") or detail)
    except ValueError:
        pass
    status = response.status_code
    if status >= 500:
        raise CoordinatorUnavailable(f"coordinator answered {status}: {detail}")
    if status == 409 and stale_on_conflict:
        raise StaleLease(detail)
    error = _STATUS_ERRORS.get(status, InvalidInput)
    raise error(detail)


def _body(model: type[BaseModel], **fields: Any) -> Any:
    """A request body checked by the wire model the coordinator parses it with (a value it
    would refuse raises `InvalidInput` here, before anything is sent)."""
    try:
        return model.model_validate(fields).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise InvalidInput(f"invalid {model.__name__}: {exc}") from None


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context (httpx's default: certifi's CAs) shared by every client:
    making one reads the CA bundle, ~20 ms of CPU, once per client otherwise."""
    return ssl.create_default_context(cafile=certifi.where())


def url_problem(base_url: str) -> str | None:
    """Why `base_url` cannot be a coordinator's URL (a typo, not an outage), else None."""
    try:
        url = httpx.URL(base_url) if "://" in base_url else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        return f"{base_url!r} is not a coordinator URL: give it as http://HOST:PORT (or https://)"
    return None


class CoordinatorClient:
    """A typed client of one coordinator, authenticated by one bearer token (see module doc)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        problem = url_problem(base_url)
        if problem:
            raise InvalidInput(problem)
        # The API's own prefix is added per request: a URL copied with it still works.
        self.base_url = base_url.rstrip("/").removesuffix(API_PREFIX).rstrip("/")
        self.timeout_s = timeout_s
        self._has_token = bool(token)
        self._http = httpx.Client(
            base_url=self.base_url,
            # No token (a public-read coordinator, /livez): no Authorization header at all.
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout_s,
            transport=transport,
            verify=_tls(),
            # Loopback and LAN coordinators: no proxies from the environment.
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        stale_on_conflict: bool = False,
    ) -> httpx.Response:
        url = path if path.startswith("/") else f"{API_PREFIX}/{path}"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            response = self._http.request(method, url, json=json, params=params, timeout=timeout)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401 and not self._has_token:
            needs = "needs a token: pass --token or set AUTOSWARM_TOKEN"
            raise Unauthorized(f"{self.base_url} {needs}")
        if response.status_code >= 400:
            _raise_for(response, stale_on_conflict=stale_on_conflict)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise InvalidInput(f"coordinator answered non-JSON: {response.text[:200]}") from None

    @staticmethod
    def _model(model: type[_M], body: Any) -> _M:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise InvalidInput(f"coordinator answered an invalid {model.__name__}: {exc}") from None

    # -- workers ----------------------------------------------------------------------------

    def register_worker(self, worker: WorkerCreate) -> str:
        """Register one worker slot; its id is bound to this client's token."""
        body = self._json(self._request("POST", "workers", json=worker.model_dump(mode="json")))
        if not isinstance(body, dict) or not isinstance(body.get("worker_id"), str):
            raise InvalidInput(f"coordinator answered no worker_id: {body!r}")
        return str(body["worker_id"])

    def lease(self, worker_id: str, wait_s: float) -> Lease | None:
        """Lease one experiment, waiting up to `wait_s` (0..60) for one; None if none came."""
        response = self._request(
            "POST",
            "leases",
            json=_body(LeaseRequest, worker_id=worker_id, wait_s=wait_s),
            timeout_s=wait_s + self.timeout_s,
        )
        if response.status_code == 204:
            return None
        return self._model(Lease, self._json(response))

    def heartbeat(
        self,
        experiment_id: str,
        worker_id: str,
        fencing_token: int,
        *,
        can_switch: bool = False,
        running_s: float | None = None,
        timeout_s: float | None = None,
    ) -> HeartbeatAnswer:
        """Renew a lease; `StaleLease` if the token is stale. With `can_switch`, the answer may
        hand over another lease (`switch_to`) in place of a preempted explore that has run for
        `running_s` (0: not started yet; None: the coordinator counts from the lease)."""
        body = _body(
            HeartbeatRequest,
            worker_id=worker_id,
            fencing_token=fencing_token,
            can_switch=can_switch,
            running_s=None if running_s is None else round(running_s, 3),
        )
        response = self._request(
            "POST",
            f"leases/{experiment_id}/heartbeat",
            json=body,
            timeout_s=timeout_s,
            stale_on_conflict=True,
        )
        return self._model(HeartbeatAnswer, self._json(response))

    def release(self, experiment_id: str, worker_id: str, fencing_token: int) -> None:
        """Hand a lease back; the experiment is queued again without counting an attempt."""
        self._request(
            "POST",
            f"leases/{experiment_id}/release",
            json=_body(LeaseAction, worker_id=worker_id, fencing_token=fencing_token),
            stale_on_conflict=True,
        )

    def report(self, report: ResultReport, worker_id: str) -> bool:
        """Report a result: True if recorded now, False if it was already recorded."""
        payload = _body(ResultSubmit, worker_id=worker_id, **dict(report))
        response = self._request("POST", "results", json=payload, stale_on_conflict=True)
        body = self._json(response)
        return bool(body.get("recorded", response.status_code == 201))

    def worker_summary(self, worker_id: str, since_s: float) -> WorkerSummary:
        """The worker's runs, kept ones and credit since `since_s` (unix s, its start)."""
        params = {"since_s": f"{max(0.0, since_s):.3f}"}
        body = self._json(self._request("GET", f"workers/{worker_id}/summary", params=params))
        return self._model(WorkerSummary, body)

    def fetch_bundle(self, bundle_hash: str) -> dict[str, bytes]:
        """The task files of one bundle, verified against `bundle_hash`."""
        body = self._json(self._request("GET", f"bundles/{bundle_hash}"))
        return decode_bundle(bundle_hash, body)

    # -- proposers --------------------------------------------------------------------------

    def context(self, task_id: str, hardware: str | None = None) -> ProposerContext:
        """What a proposer needs to know about a task (on one hardware class if given)."""
        params = {"hardware": hardware} if hardware else None
        body = self._json(self._request("GET", f"tasks/{task_id}/context", params=params))
        return self._model(ProposerContext, body)

    def submit_hypothesis(self, hypothesis: HypothesisCreate) -> dict[str, Any]:
        """Submit a hypothesis: `{"hypothesis_id", "experiment_id" or None, "duplicate"}`."""
        payload = hypothesis.model_dump(mode="json")
        body = self._json(self._request("POST", "hypotheses", json=payload))
        if not isinstance(body, dict) or "hypothesis_id" not in body:
            raise InvalidInput(f"coordinator answered no hypothesis_id: {body!r}")
        return body

    # -- admin ------------------------------------------------------------------------------

    def report_spend(self, task_id: str, spend: SpendReport) -> None:
        """Tell the coordinator what model calls cost (its /metrics shows the totals)."""
        self._request("POST", f"tasks/{task_id}/spend", json=spend.model_dump(mode="json"))

    def register_task(self, files: dict[str, bytes]) -> dict[str, Any]:
        """Register a task from its files (admin); idempotent for the same files."""
        encoded = {
            path: base64.b64encode(content).decode("ascii") for path, content in files.items()
        }
        payload = _body(TaskCreate, files=encoded)
        body = self._json(self._request("POST", "tasks", json=payload))
        if not isinstance(body, dict) or "task_id" not in body:
            raise InvalidInput(f"coordinator answered no task_id: {body!r}")
        return body

    def create_token(self, scope: str, name: str) -> str:
        """A new token of `scope` (admin); the coordinator keeps only its hash."""
        payload = _body(TokenCreate, scope=scope, name=name)
        body = self._json(self._request("POST", "tokens", json=payload))
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise InvalidInput("coordinator answered no token")
        return str(body["token"])

    # -- reading ----------------------------------------------------------------------------

    def server_time(self) -> float:
        """The coordinator's clock (unix seconds), for skew checks."""
        body = self._json(self._request("GET", "time"))
        value = body
        if isinstance(body, dict):
            value = next((body[k] for k in _TIME_KEYS if k in body), None)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"coordinator answered an invalid time: {body!r}") from None

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token by its id (admin): refused from now on, its workers' leases queued."""
        body: dict[str, Any] = self._json(self._request("DELETE", f"tokens/{token_id}"))
        return body

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET any read endpoint (`tasks`, `experiments/{id}`, `/livez`) as parsed JSON."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return self._json(self._request("GET", path, params=clean))
