"""autoswarm: AutoResearch across many machines, one lineage.

One import root with four parts (docs/architecture.md draws them):
`autoswarm.shared` (what both sides agree on), `autoswarm.coordinator` (the API, Redis, the
judge, the lineage), `autoswarm.worker` (lease, sandbox, run, report) and `autoswarm.cli`
(the `autoswarm` command in front of both).
"""

__version__ = "0.1.0"
