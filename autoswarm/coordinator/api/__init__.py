"""The coordinator's HTTP API (docs/protocol.md): the only package that imports fastapi."""

from __future__ import annotations

from autoswarm.coordinator.api.app import create_app

__all__ = ["create_app"]
