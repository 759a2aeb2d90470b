"""A prepare step that fails."""

print("downloading the corpus")
raise SystemExit("prepare: corpus checksum mismatch")
