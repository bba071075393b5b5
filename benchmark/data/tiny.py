"""A tiny synthetic sentiment task with a learnable rule, for tests and the CLI smoke preset.

Sentences are built from a small vocabulary; the label is 1 when a positive word appears and
0 when a negative one does. Deterministic: the same seed always gives the same sentences.
"""

from __future__ import annotations

import random

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "terrible"]
FILLER = [
    "the", "a", "movie", "film", "plot", "story", "was", "is", "very", "quite", "really",
    "acting", "music", "and", "but", "this", "that", "it", "ending", "cast", "script", "scene",
]  # fmt: skip
VOCAB = sorted(set(POSITIVE + NEGATIVE + FILLER))


def make_examples(n: int, seed: int) -> list[list]:
    """``n`` examples ``[text, label]`` with balanced labels."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
        words.insert(rng.randrange(len(words) + 1), word)
        out.append([" ".join(words), label])
    return out


def tiny_splits() -> dict[str, list[list]]:
    """The tiny task's splits: 96 train, 32 validation."""
    return {"train": make_examples(96, seed=1), "validation": make_examples(32, seed=2)}
