"""Short ids: any unique prefix of at least `MIN_PREFIX` characters names an experiment or
a worker, as the tables print them; an ambiguous one is refused, listing what it matches."""

from __future__ import annotations

from autoswarm.coordinator.store import Store
from autoswarm.shared.errors import InvalidInput, NotFound

MIN_PREFIX = 8
# How many matches an ambiguous prefix's error lists.
SHOWN_MATCHES = 5


def resolve_experiment_id(store: Store, given: str) -> str:
    """The full id `given` names: itself when it is one, else the one id it starts.
    NotFound when none, InvalidInput (listing them) when several."""
    if store.get_experiment(given) is not None:
        return given
    if len(given) < MIN_PREFIX:
        raise NotFound(
            f"experiment {given} does not exist (a short id needs at least {MIN_PREFIX} characters)"
        )
    matches = store.experiment_ids_starting(given, SHOWN_MATCHES + 1)
    if not matches:
        raise NotFound(f"experiment {given} does not exist")
    return _one("experiment", given, matches)


def resolve_worker_id(store: Store, given: str) -> str:
    """The worker id `given` names (itself, or the one id it starts); `given` unchanged
    when it names none (a filter on it then finds nothing). InvalidInput when several."""
    if len(given) < MIN_PREFIX or store.get_worker(given) is not None:
        return given
    matches = sorted(w.worker_id for w in store.list_workers() if w.worker_id.startswith(given))
    return _one("worker", given, matches) if matches else given


def _one(what: str, given: str, matches: list[str]) -> str:
    if len(matches) > 1:
        listed = ", ".join(matches[:SHOWN_MATCHES])
        if len(matches) > SHOWN_MATCHES:
            listed += ", ..."
        raise InvalidInput(
            f"{what} id {given} is ambiguous, it starts {listed}: give more characters"
        )
    return matches[0]
