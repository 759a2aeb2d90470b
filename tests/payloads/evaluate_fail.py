"""An evaluator that fails."""

raise SystemExit("evaluator: cannot score this")
