"""The proposer contract and the loop that keeps a task's queue a few experiments ahead.

Every proposer (mutation, llm) is a `Proposer`; `run_proposer_loop` drives any of them
against the coordinator through a `ProposerClient` (in practice `autoswarm.shared.client`'s
`CoordinatorClient`, passed in so this package never imports the HTTP stack).

What the loop guarantees: it proposes only while the task's queue is shorter than
`queue_ahead`, re-reads the context after every submission (so the next proposal sees
what is now in flight), stops promptly when `stop` is set, and survives a coordinator
that is briefly unreachable or rejects one hypothesis. It ends with an error when the
proposer cannot go on (`ProposerStopped`: a refused key, an unknown model), when a spend cap
is reached (`SpendCapReached`) or the coordinator refuses the token or task. What it does
not do: judge, deduplicate (the coordinator and the proposer do) or retry a rejected
hypothesis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from autoswarm.shared.errors import (
    AutoswarmError,
    Forbidden,
    NotFound,
    SpendCapReached,
    Unauthorized,
)
from autoswarm.shared.models import HypothesisCreate, ProposerContext

logger = logging.getLogger(__name__)


class ProposerStopped(AutoswarmError):
    """The proposer cannot go on as configured (a refused key, an unknown model)."""


# A wrong token, task name or key will not fix itself by waiting: these end the loop.
_FATAL = (Unauthorized, Forbidden, NotFound, ProposerStopped)


class Proposer(Protocol):
    """Turns a task's context into one hypothesis, or None when it has nothing new."""

    def propose(self, context: ProposerContext) -> HypothesisCreate | None: ...


class ProposerClient(Protocol):
    """The two coordinator calls a proposer needs (docs/protocol.md, proposer endpoints)."""

    def context(self, task_id: str) -> ProposerContext: ...

    def submit_hypothesis(self, hypothesis: HypothesisCreate) -> dict[str, Any]: ...


def run_proposer_loop(
    client: ProposerClient,
    task_id: str,
    proposer: Proposer,
    *,
    queue_ahead: int = 2,
    poll_s: float = 5.0,
    stop: threading.Event | None = None,
    max_hypotheses: int | None = None,
) -> int:
    """Keep `task_id`'s queue `queue_ahead` deep until `stop` is set; returns how many were sent.

    `max_hypotheses` ends the loop after that many submissions (a bounded run); a spent
    LLM budget (`SpendCapReached`) ends it with that error, raised.
    """
    stop = stop or threading.Event()
    name = str(getattr(proposer, "name", type(proposer).__name__))
    submitted = 0
    idle = False  # "nothing new" is logged once per idle spell, not every poll
    while not stop.is_set() and (max_hypotheses is None or submitted < max_hypotheses):
        try:
            context = client.context(task_id)
            if context.queue_depth >= queue_ahead:
                stop.wait(poll_s)
                continue
            hypothesis = proposer.propose(context)
            if hypothesis is None:
                if not idle:
                    logger.info("proposer %s: task %s: nothing new to propose", name, task_id)
                idle = True
                stop.wait(poll_s)
                continue
            idle = False
            answer = client.submit_hypothesis(hypothesis)
        except SpendCapReached as exc:
            logger.warning("proposer %s: task %s: %s; stopping", name, task_id, exc)
            raise
        except _FATAL:
            raise
        except AutoswarmError as exc:
            if stop.is_set():  # the call in flight was abandoned: nothing to retry
                break
            logger.warning(
                "proposer %s: task %s: %s; retrying in %.0f s", name, task_id, exc, poll_s
            )
            stop.wait(poll_s)
            continue
        submitted += 1
        logger.info(
            "proposer %s: task %s: submitted %r as %s",
            name,
            task_id,
            hypothesis.title,
            answer.get("hypothesis_id"),
        )
    logger.info("proposer %s: task %s: stopped after %d hypotheses", name, task_id, submitted)
    return submitted


def run_proposer_loops(
    client: ProposerClient,
    task_id: str,
    proposers: Sequence[Proposer],
    *,
    stop: threading.Event,
    max_hypotheses: int | None = None,
    **options: Any,
) -> int:
    """One `run_proposer_loop` per proposer, each in its own thread, until all end; the total
    sent. `max_hypotheses` is shared out between them. The first error sets `stop`, so every
    loop ends, and is raised once they have."""
    errors: list[Exception] = []
    sent: list[int] = []

    def run(proposer: Proposer, bound: int | None) -> None:
        try:
            sent.append(
                run_proposer_loop(
                    client, task_id, proposer, stop=stop, max_hypotheses=bound, **options
                )
            )
        except Exception as exc:  # raised in the caller's thread below
            errors.append(exc)
            stop.set()

    n = len(proposers)
    bounds = [
        None if max_hypotheses is None else max_hypotheses // n + (i < max_hypotheses % n)
        for i in range(n)
    ]
    threads = [
        threading.Thread(target=run, args=(p, b), name=f"proposer-{i}", daemon=True)
        for i, (p, b) in enumerate(zip(proposers, bounds, strict=True))
        if b is None or b > 0
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a short join keeps the main thread responsive to signals
            thread.join(0.2)
    if errors:
        raise errors[0]
    return sum(sent)
