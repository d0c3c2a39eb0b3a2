"""A small synthetic dataset with a signal a router can learn (words tell who is right)."""

from __future__ import annotations

import numpy as np

from routecast.data.dataset import Dataset
from routecast.data.splits import random_split

WORDS = {
    "easy": ["hello", "weather", "greeting", "thanks", "colour", "song"],
    "hard": ["integral", "theorem", "proof", "derivative", "matrix", "eigenvalue"],
}


def toy_dataset(n: int = 300, seed: int = 0) -> Dataset:
    """Three models: ``small`` (cheap) is right on easy prompts only, ``large`` (dear) on
    nearly all, ``medium`` in between. Hard prompts say so with their words."""
    rng = np.random.default_rng(seed)
    prompts, quality = [], []
    for i in range(n):
        kind = "hard" if i % 2 else "easy"
        words = rng.choice(WORDS[kind], size=4)
        prompts.append(f"question {i}: " + " ".join(words))
        if kind == "easy":
            quality.append([1.0, 1.0, 1.0] if rng.random() < 0.95 else [0.0, 1.0, 1.0])
        else:
            quality.append([0.0, float(rng.random() < 0.5), float(rng.random() < 0.95)])
    q = np.asarray(quality)
    cost = np.tile([0.001, 0.004, 0.02], (n, 1)) * rng.uniform(0.8, 1.2, size=(n, 3))
    return Dataset(
        name="toy", models=("small", "medium", "large"),
        ids=tuple(f"toy-{i}" for i in range(n)), prompts=tuple(prompts),
        quality=q, cost_usd=cost, split=random_split(n, seed=seed),
        task=tuple("hard" if i % 2 else "easy" for i in range(n)),
    )
