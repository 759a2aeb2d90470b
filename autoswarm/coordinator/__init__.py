"""The coordinator: HTTP API, Redis store, scheduler, judge, lineage, proposers."""
