"""`python -m autoswarm.coordinator`: the coordinator, with settings from AUTOSWARM_* variables."""

from __future__ import annotations

import os

from autoswarm.coordinator.service import run_coordinator
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.shared.logs import configure_logging


def main() -> None:
    configure_logging(os.environ.get("AUTOSWARM_LOG_LEVEL", "INFO"))
    run_coordinator(CoordinatorSettings())


if __name__ == "__main__":
    main()
