"""Helpers shared by the commands: the stderr console, progress, data loading, options."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset

err_console = Console(stderr=True)

FORMAT_HELP = "input format: auto, routecast, routerbench, routellm, cascades, llmrouter"


F = TypeVar("F", bound=Callable[..., Any])


def format_option(f: F) -> F:
    """The ``--format`` option shared by every command that reads outcome data."""
    return click.option("--format", "fmt", default="auto", show_default=True,
                        help=FORMAT_HELP)(f)


@contextmanager
def progress_bar(total: int, enabled: bool | None = None
                 ) -> Iterator[Callable[[int, str], None]]:
    """A progress bar on stderr over ``total`` items (silent when not a terminal).

    Yields ``update(done, description)``.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=err_console, transient=True,
                        disable=not (err_console.is_terminal if enabled is None else enabled))
    with progress:
        task = progress.add_task("starting", total=total)

        def update(done: int, description: str) -> None:
            progress.update(task, completed=done, description=description)

        yield update
        progress.update(task, completed=total)


def load_data(data: str, fmt: str = "auto", seed: int = 0, prices: str | None = None
              ) -> Dataset:
    """Load ``data`` with a spinner, then say what was loaded and what was dropped."""
    from routecast.data import load_dataset

    options: dict[str, Any] = {}
    if prices is not None:
        from routecast.data.pricing import load_prices

        options["prices"] = load_prices(prices)
    with err_console.status(f"loading {data}"):
        t0 = time.perf_counter()
        ds = load_dataset(data, fmt=fmt, seed=seed, **options)
    dropped = ds.meta.get("dropped") or {}
    note = ""
    if isinstance(dropped, dict) and dropped.get("prompts"):
        note = f"; dropped {dropped['prompts']} prompts ({dropped.get('rule', '')})"
    err_console.print(f"loaded {ds!r} in {time.perf_counter() - t0:.1f}s{note}",
                      highlight=False)
    return ds


def write_json(path: str | Path, result: Any) -> None:
    """Write a command's result to ``path`` as indented JSON, and say so on stderr."""
    Path(path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    err_console.print(f"wrote {path}")
