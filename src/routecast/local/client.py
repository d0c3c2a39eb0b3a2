"""The minimal OpenAI-compatible client that ``collect`` talks through.

One call, ``ask(endpoint, prompt) -> Answer``: text, token counts, wall-clock latency and the
per-token log-probabilities of the generated text. Chat models are asked through
``/v1/chat/completions`` (``logprobs: true``); base models through ``/v1/completions`` with the
prompt wrapped in the endpoint's template (``logprobs: 1``). Decoding is greedy by default
(temperature 0), so a rerun asks the same question the same way.

This is deliberately small and stands in for the project's generic backend
(``routecast.backends.openai_http``): ``collect`` and the judge only depend on the ``AskFn``
shape, so swapping it for the shared backend touches :class:`Client` alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from routecast.errors import (
    ConfigError,
    OptionalDependencyError,
    UpstreamError,
    UpstreamTimeoutError,
)

if TYPE_CHECKING:
    import aiohttp

Api = Literal["chat", "completion"]


@dataclass(frozen=True)
class Endpoint:
    """How to ask one model over HTTP.

    ``model`` is routecast's name for it (the outcomes column); ``api_model`` the ``model``
    field sent to the server (defaults to ``model``). ``base_url`` is the server root, with or
    without a trailing ``/v1``. ``template`` wraps the prompt for the completion API and must
    contain ``{prompt}``. ``logprobs`` asks for the generated tokens' log-probabilities (the
    source of ``confidence``); llama-cpp-python computes them slowly, so they can be turned off.
    """

    model: str
    base_url: str
    api: Api = "chat"
    api_model: str | None = None
    template: str = "{prompt}"
    stop: tuple[str, ...] = ()
    max_tokens: int = 32
    temperature: float = 0.0
    timeout_s: float = 120.0
    logprobs: bool = True
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.api not in ("chat", "completion"):
            raise ConfigError(f"endpoint {self.model!r}: api must be 'chat' or 'completion', "
                              f"got {self.api!r}")
        if "{prompt}" not in self.template:
            raise ConfigError(f"endpoint {self.model!r}: template must contain '{{prompt}}'")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint {self.model!r}: base URL {self.base_url!r} must start "
                              "with http:// or https://")

    @property
    def url(self) -> str:
        root = self.base_url.rstrip("/").removesuffix("/v1")
        return f"{root}/v1/{'chat/completions' if self.api == 'chat' else 'completions'}"

    def body(self, prompt: str) -> dict[str, Any]:
        """The JSON request body for ``prompt``."""
        body: dict[str, Any] = {"model": self.api_model or self.model,
                                "max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.stop:
            body["stop"] = list(self.stop)
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            if self.logprobs:
                # llama-cpp-python returns chat log-probs only when top_logprobs is given too.
                body["logprobs"] = True
                body["top_logprobs"] = 1
        else:
            body["prompt"] = self.template.replace("{prompt}", prompt)
            if self.logprobs:
                body["logprobs"] = 1
        return body


@dataclass(frozen=True)
class Answer:
    """What one request returned. ``token_logprobs`` is ``None`` when the server sent none."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    token_logprobs: tuple[float, ...] | None


def parse_answer(endpoint: Endpoint, payload: Any, latency_s: float) -> Answer:
    """An :class:`Answer` from an OpenAI-style response body (chat or completion)."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"] if endpoint.api == "chat" else choice["text"]
        usage = payload.get("usage") or {}
    except (KeyError, IndexError, TypeError):
        raise UpstreamError(f"{endpoint.url} answered without choices: {str(payload)[:200]}",
                            model=endpoint.model) from None
    logprobs: tuple[float, ...] | None = None
    lp = choice.get("logprobs")
    if isinstance(lp, dict):
        if isinstance(lp.get("content"), list):  # chat: one entry per token
            logprobs = tuple(float(t["logprob"]) for t in lp["content"])
        elif isinstance(lp.get("token_logprobs"), list):  # completion
            logprobs = tuple(float(x) for x in lp["token_logprobs"] if x is not None)
    tokens_out = usage.get("completion_tokens")
    return Answer(text=text or "", tokens_in=int(usage.get("prompt_tokens") or 0),
                  tokens_out=int(tokens_out if tokens_out is not None else len(logprobs or ())),
                  latency_s=latency_s, token_logprobs=logprobs)


class Client:
    """An async HTTP session to ask endpoints with; use as ``async with Client() as c``."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        try:
            import aiohttp
        except ImportError:
            raise OptionalDependencyError("aiohttp", "local", "asking models over HTTP",
                                          hint="pip install aiohttp") from None
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ask(self, endpoint: Endpoint, prompt: str) -> Answer:
        """Ask ``endpoint`` one question; raises :class:`UpstreamError` on any failure."""
        import aiohttp

        if self._session is None:
            raise RuntimeError("Client.ask called outside `async with Client()`")
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        t0 = time.perf_counter()
        try:
            async with self._session.post(
                    endpoint.url, json=endpoint.body(prompt), headers=headers,
                    timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s)) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:300]
                    raise UpstreamError(
                        f"{endpoint.url} answered {resp.status}: {detail}", model=endpoint.model,
                        upstream_status=resp.status, retryable=resp.status in (429,) or
                        resp.status >= 500)
                payload = await resp.json(content_type=None)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{endpoint.url} did not answer within {endpoint.timeout_s:g}s; raise the "
                "endpoint's timeout or lower max_tokens", model=endpoint.model, status=504,
                retryable=True) from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"cannot reach {endpoint.url} ({e}); is the server running?",
                                model=endpoint.model, retryable=True) from None
        except ValueError as e:  # invalid JSON
            raise UpstreamError(f"{endpoint.url} sent invalid JSON ({e})",
                                model=endpoint.model) from None
        return parse_answer(endpoint, payload, time.perf_counter() - t0)
