"""Proposers: what turns a task's context into hypotheses with their changes."""

from coordinator.proposers.base import Proposer, ProposerClient, run_proposer_loop
from coordinator.proposers.mutation import MutationProposer

__all__ = ["MutationProposer", "Proposer", "ProposerClient", "run_proposer_loop"]
