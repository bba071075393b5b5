"""Seeding of the global random number generators."""

from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs.

    Library code takes explicit seeds or generators; this is for what draws from the global
    state: dropout while a method trains (seeded once per job, so a job's result does not
    depend on which jobs ran before it in the same process) and TextAttack's transformations
    and searches (seeded once per attacked example, so a result does not depend on which
    examples ran before it, serially or split across workers).
    """
    from transformers import set_seed

    set_seed(seed % 2**32)  # Python's, NumPy's, torch's (and CUDA's) generators
