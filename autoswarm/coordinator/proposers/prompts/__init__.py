"""The LLM proposer's prompt templates, shipped as data files (`$name` placeholders)."""
