"""Whether a coordinator knows a token, asked before anything slow starts (a worker's
sandbox self-test, `autoswarm doctor`): one read the token's scope may or may not allow."""

from __future__ import annotations

from autoswarm.shared.client import CoordinatorClient, CoordinatorUnavailable
from autoswarm.shared.errors import AutoswarmError, Forbidden, Unauthorized


def token_refused(url: str, token: str, *, timeout_s: float = 10.0) -> str | None:
    """Why the coordinator at `url` refuses `token` (unknown, revoked); None when it knows
    it, or cannot be asked now (away: the worker's retries say so)."""
    with CoordinatorClient(url, token, timeout_s=timeout_s) as client:
        try:
            client.get_json("tasks")
        except Unauthorized as exc:
            return str(exc)
        except (Forbidden, CoordinatorUnavailable):
            return None  # known, with a scope other than read; or not reachable now
        except AutoswarmError:
            return None
    return None
