"""Proposers: what turns a task's context into hypotheses with their changes."""

from autoswarm.coordinator.proposers.base import Proposer, ProposerClient, run_proposer_loop
from autoswarm.coordinator.proposers.mutation import MutationProposer

__all__ = ["MutationProposer", "Proposer", "ProposerClient", "run_proposer_loop"]
