"""``routecast collect``: ask models a task set with gold answers and write their outcomes."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from routecast.cli.common import err_console, progress_bar
from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.local.collect import ModelSpec
    from routecast.local.graders import Judge


def _remote_spec(arg: str, prices_file: str | None, max_tokens: int, logprobs: bool,
                 api_key: str | None) -> ModelSpec:
    """``NAME=URL``: a running OpenAI-compatible server, asked through its chat API."""
    from routecast.data.pricing import load_prices, price_of
    from routecast.local.client import Endpoint
    from routecast.local.collect import ModelSpec

    name, _, url = arg.partition("=")
    if not name or not url:
        raise ConfigError(f"--model {arg!r}: give a built-in local model or NAME=URL")
    price = price_of(name, load_prices(prices_file), where="--model")
    return ModelSpec(Endpoint(model=name, base_url=url, max_tokens=max_tokens,
                              logprobs=logprobs, api_key=api_key), price=price, max_parallel=4)


def _summary(ds: Dataset) -> Table:
    """Per model: quality, latency, tokens, cost, and how well confidence ranks right answers."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    # Short headers: piped output is 80 columns wide, and wrapped headers are hard to grep.
    table = Table(caption="latency in s; conf: mean token probability; AUROC: how well conf "
                  "ranks right answers above wrong ones (0.5 = not at all)")
    for col in ("model", "quality", "p50", "p90", "tok_out", "USD/query", "conf", "AUROC"):
        table.add_column(col)
    for j, m in enumerate(ds.models):
        q, lat = ds.quality[:, j], ds.latency_s[:, j] if ds.latency_s is not None else None
        conf = ds.confidence[:, j] if ds.confidence is not None else np.full(len(q), np.nan)
        ok = ~np.isnan(conf)
        # AUROC needs both right and wrong answers among those with a confidence.
        auroc = (f"{roc_auc_score(q[ok] > 0.5, conf[ok]):.3f}"
                 if ok.any() and len(set((q[ok] > 0.5).tolist())) == 2 else "-")
        table.add_row(
            m, f"{q.mean():.3f}",
            "-" if lat is None else f"{np.percentile(lat, 50):.3f}",
            "-" if lat is None else f"{np.percentile(lat, 90):.3f}",
            "-" if ds.tokens_out is None else f"{ds.tokens_out[:, j].mean():.1f}",
            f"{ds.cost_usd[:, j].mean():.3g}",
            f"{np.nanmean(conf):.3f}" if ok.any() else "-", auroc)
    return table


@click.command("collect")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("-m", "--model", "models", multiple=True, metavar="MODEL",
              help="a built-in local model (smollm2-135m, gemma3-270m; served here with "
                   "llama.cpp) or NAME=URL of a running OpenAI-compatible server; repeat for "
                   "more. Default: both built-in models")
@click.option("--tasks", "tasks_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON Lines task file (see routecast.local.tasks); default: the built-in set")
@click.option("--limit", type=int, help="ask only this many tasks, a seeded random subset")
@click.option("--per-level", default=30, show_default=True,
              help="built-in set: arithmetic questions per difficulty level (5 levels)")
@click.option("--seed", default=0, show_default=True,
              help="seed of the built-in set, the subset and the split")
@click.option("--concurrency", default=2, show_default=True, help="requests in flight at most")
@click.option("--max-tokens", default=32, show_default=True, help="longest answer, in tokens")
@click.option("--threads", type=int, help="threads per local server [default: cores / servers]")
@click.option("--logprobs/--no-logprobs", default=True, show_default=True,
              help="ask for token log-probs (confidence); llama.cpp needs 4-14x less CPU without")
@click.option("--judge", help="model that grades tasks whose grader is 'judge' (as --model)")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False),
              help="JSON price table for NAME=URL models (see README: Price table)")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="environment variable holding the API key for NAME=URL models")
@click.option("--usd-per-kwh", default=0.15, show_default=True,
              help="electricity price that local models are costed at")
@click.option("--journal", type=click.Path(dir_okay=False),
              help="resumable journal [default: OUT.journal]")
@click.option("--name", help="dataset name [default: OUT's file name]")
@click.option("--start-timeout", default=120.0, show_default=True,
              help="seconds to wait for a local server to be ready")
def collect_cmd(out: str, models: tuple[str, ...], tasks_file: str | None, limit: int | None,
                per_level: int, seed: int, concurrency: int, max_tokens: int,
                threads: int | None, logprobs: bool, judge: str | None, prices: str | None,
                api_key_env: str, usd_per_kwh: float, journal: str | None, name: str | None,
                start_timeout: float) -> None:
    """Ask MODELs a task set with gold answers; write graded outcomes to OUT (.jsonl[.gz]).

    Finished answers are journaled as they come: run the same command again after a stop
    and only the missing (task, model) pairs are asked.
    """
    from routecast.local import llamacpp
    from routecast.local.client import Client
    from routecast.local.collect import CollectResult, collect_async, local_spec
    from routecast.local.graders import Judge
    from routecast.local.models import BUILTIN, local_model
    from routecast.local.tasks import builtin_tasks, load_tasks, sample

    if not out.endswith((".jsonl", ".jsonl.gz")):
        raise ConfigError(f"output {out!r} must end in .jsonl or .jsonl.gz")
    models = models or tuple(BUILTIN)
    tasks = sample(load_tasks(tasks_file) if tasks_file else builtin_tasks(seed, per_level),
                   limit, seed)
    api_key = os.environ.get(api_key_env)
    wanted = list(dict.fromkeys([*models, *([judge] if judge else [])]))
    local = [local_model(m) for m in wanted if "=" not in m]
    remote = {m: _remote_spec(m, prices, max_tokens, logprobs, api_key)
              for m in wanted if "=" in m}

    servers: dict[str, llamacpp.LlamaServer] = {}
    if local:
        with err_console.status(f"starting {', '.join(m.name for m in local)}"):
            servers = llamacpp.start(local, n_threads=threads, logprobs=logprobs,
                                     timeout_s=start_timeout)
    try:
        for s in servers.values():
            err_console.print(f"started {s.alias} on port {s.port} ({s.n_threads} threads) in "
                              f"{s.ready_s:.1f}s", highlight=False)
        specs = {**{n: local_spec(local_model(n), s.base_url, s.n_threads,
                                  max_tokens=max_tokens, logprobs=logprobs)
                    for n, s in servers.items()},
                 **remote}

        async def run() -> CollectResult:
            async with Client() as client:
                grader: Judge | None = None
                if judge:
                    grader = Judge(client.ask, specs[judge].endpoint)
                with progress_bar(len(tasks) * len(models)) as update:
                    return await collect_async(
                        tasks, [specs[m] for m in models], out, ask=client.ask,
                        concurrency=concurrency, journal=journal,
                        name=name or os.path.basename(out).split(".")[0], seed=seed,
                        judge=grader, usd_per_kwh=usd_per_kwh,
                        progress=lambda done, total, desc: update(done, desc))

        result = asyncio.run(run())
    finally:
        for s in servers.values():
            s.stop()
    click.echo(f"wrote {result.dataset.n_prompts} prompts x {result.dataset.n_models} models "
               f"to {result.path} ({result.resumed} pairs from the journal, {result.asked} asked)")
    Console().print(_summary(result.dataset))
