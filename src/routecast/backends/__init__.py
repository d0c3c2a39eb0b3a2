"""Backends: objects that answer OpenAI-style requests, one model or a composite of several.

::

    Backend                      complete(request) -> Completion, stream(request) -> Chunks
    ├── OpenAIHTTPBackend        one model behind any OpenAI-compatible server
    ├── FallbackBackend          the next model when one fails before answering
    ├── RoutedBackend            a router + policy pick the model per request
    └── CascadeBackend           cheapest first, escalating while confidence is too low

Importing this package is cheap: aiohttp is imported when the first request is sent.
"""

from __future__ import annotations

from routecast.backends.base import Api, Backend, Chunk, Completion, Price, Request, Usage
from routecast.backends.cascade import CascadeBackend
from routecast.backends.fallback import FallbackBackend
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.prompt_format import FORMATS, PromptFormat
from routecast.backends.retry import RetryPolicy
from routecast.backends.routed import SESSION_HEADER, RoutedBackend, routing_text
from routecast.backends.transport import AiohttpTransport, Transport, TransportResponse

__all__ = [
    "FORMATS",
    "SESSION_HEADER",
    "AiohttpTransport",
    "Api",
    "Backend",
    "CascadeBackend",
    "Chunk",
    "Completion",
    "FallbackBackend",
    "OpenAIHTTPBackend",
    "Price",
    "PromptFormat",
    "Request",
    "RetryPolicy",
    "RoutedBackend",
    "Transport",
    "TransportResponse",
    "Usage",
    "routing_text",
]
