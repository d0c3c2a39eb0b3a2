"""``mlp`` is a non-linear network, not ``mf``'s low-rank linear model under another name.

Before issue 12 both routers solved the same nuclear-norm-regularised logistic regression (an
MLP whose ReLU units are on for every prompt or for none is linear), and predicted the same
to within 1e-5 on these toy prompts and 0.0009 on the RouterBench subset.
"""

from __future__ import annotations

import numpy as np

from routecast.routers import make_router
from routecast.routers.mlp import MLPRouter
from tests.toy import toy_dataset


def test_mlp_hidden_units_split_the_prompts_and_it_differs_from_mf() -> None:
    data = toy_dataset(300)
    train, test = data.subset("train"), data.subset("test")
    mlp = make_router("mlp").fit(train)
    mf = make_router("mf").fit(train)
    assert isinstance(mlp, MLPRouter)
    active = mlp.hidden_layer(list(test.prompts)) > 0  # (starts, prompts, units)
    mixed = active.any(axis=1) & ~active.all(axis=1)  # on for some prompts, off for others
    assert mixed.mean() > 0.5
    p_mlp, p_mf = mlp.predict(list(test.prompts)), mf.predict(list(test.prompts))
    assert np.abs(p_mlp - p_mf).max() > 0.05
    # ... while both still learn the toy's signal: the large model beats the small one on
    # hard prompts, and the small one is fine on easy ones.
    hard = np.asarray(test.task) == "hard"
    assert p_mlp[hard, 0].mean() < 0.3 < 0.7 < p_mlp[~hard, 0].mean()
