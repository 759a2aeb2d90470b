"""The worker: lease, fetch, prepare, run sandboxed, score, report."""
