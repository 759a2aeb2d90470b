"""`python -m coordinator`: run the coordinator with settings from AUTOSWARM_* variables."""

from __future__ import annotations

import logging
import os

from coordinator.service import run_coordinator
from coordinator.settings import CoordinatorSettings


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("AUTOSWARM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run_coordinator(CoordinatorSettings())


if __name__ == "__main__":
    main()
