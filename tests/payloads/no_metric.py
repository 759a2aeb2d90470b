"""Prints a summary block without the metric."""

print("---")
print("training_seconds: 0.1")
