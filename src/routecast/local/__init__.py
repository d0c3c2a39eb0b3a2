"""Local models and outcome collection, fully offline.

Two small open models ship as PyPI packages and are served by llama.cpp's OpenAI-compatible
server on 127.0.0.1; a task set written by the project (seeded arithmetic of graded difficulty and
short factual questions with gold answers) gives them something to be graded on; ``collect``
runs tasks through models and writes routecast outcomes.

Nothing here is imported by ``import routecast``; the modules load only when used::

    routecast.local.models      the built-in local models (where each GGUF is, chat or base)
    routecast.local.llamacpp    start / health-check / stop llama.cpp server processes
    routecast.local.tasks       the built-in task set, and task files
    routecast.local.graders     exact, number, choice and judge graders
    routecast.local.client      the minimal OpenAI-compatible client collect talks through
    routecast.local.journal     the resumable per-result journal
    routecast.local.collect     run tasks x models, write outcomes
"""
