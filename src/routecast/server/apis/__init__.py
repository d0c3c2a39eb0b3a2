"""The other APIs clients speak, translated to the server's one internal request.

Coding agents speak Anthropic's Messages API (Claude Code) or OpenAI's Responses API (the
``openai`` SDK's ``responses``, Codex CLI). Each is a *dialect* here: a per-request object that
turns the client's body into an OpenAI chat request (the internal representation every
backend, router, cascade, budget, privacy rule and the request log already understand) and
turns the answer, streamed or not, and any error, back into the client's API::

    client body --to_chat--> chat body --backend--> Completion / chat chunks
                                                      |--answer/stream/error--> client API

Modules: :mod:`.common` (the dialect interface, conversation keys, SSE framing),
:mod:`.anthropic` and :mod:`.anthropic_stream` (Messages), :mod:`.responses` and
:mod:`.responses_stream` (Responses), :mod:`.store` (stored responses for
``previous_response_id``), :mod:`.routes` (the HTTP routes, embeddings included).
"""
