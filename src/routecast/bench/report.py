"""Human-readable views of a benchmark result: a terminal table and a Markdown report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from routecast.bench.schema import BenchResult, Calibrated

COLUMNS = ("router", "AIQ [95% CI]", "vs zero", "max q", "savings@95 [95% CI]", "savings@100",
           "cal. 95%: q / cost vs best", "ΔIBC", "oracle gap", "ms/prompt")
#: Columns of the second table: the calibrated points of cascades and cascade routing.
CASCADE_COLUMNS = ("cascade", "cal. 95%: q / cost vs best", "escalated", "calls",
                   "latency p50 / p99 (s)", "best single p50 / p99 (s)")


def _pct(x: float | None) -> str:
    # Round-off around zero would print as "-0.0%".
    return "-" if x is None else f"{(x if abs(x) >= 5e-5 else 0.0):.1%}"


def _ci(ci: list[float] | None, fmt: str = "{:.3f}") -> str:
    return "" if not ci else " [" + ", ".join(fmt.format(v) for v in ci) + "]"


def _calibrated(cal: Calibrated | None) -> str:
    if cal is None:
        return "n/a (evaluation only)"
    if cal["quality"] is None or "quality_vs_best" not in cal or "cost_vs_best" not in cal:
        return "unreachable"
    text = f"{cal['quality_vs_best']:.1%} / {cal['cost_vs_best']:.1%}"
    return text + (" (single-model mix)" if cal.get("fallback") else "")


def rows(result: BenchResult) -> list[list[str]]:
    """One row of strings per router, in :data:`COLUMNS` order."""
    out = []
    for r in result["routers"]:
        ci = r.get("ci")
        name = r["name"] + (" (eval only)" if r.get("evaluation_only") else "")
        out.append([
            name,
            f"{r['aiq']:.3f}" + _ci(ci["aiq"] if ci else None),
            f"{r['aiq_minus_zero']:+.3f}",
            f"{r['max_quality']:.3f}",
            _pct(r["savings_at_95"]) + _ci(ci["savings_at_95"] if ci else None, "{:.1%}"),
            _pct(r["savings_at_100"]),
            _calibrated(r["calibrated_95"]),
            _pct(r.get("delta_ibc")),
            f"{r['oracle_gap']:.3f}",
            f"{r.get('route_ms_per_prompt', 0.0):.3f}",
        ])
    return out


#: Columns of the table of points calibrated with a guarantee.
GUARANTEE_COLUMNS = ("entry", "target (val.)", "lower bound (val.)", "realised q",
                     "q / cost vs best",
                     "met", "operating point")


def guarantee_rows(result: BenchResult) -> list[list[str]]:
    """One row per entry calibrated with a guarantee: the target and the lower confidence
    bound on validation beside the quality realised on the evaluated split."""
    out = []
    for r in result["routers"]:
        g = r.get("calibrated_95_guaranteed")
        if g is None:
            continue
        if g["quality"] is None:
            out.append([r["name"], "-", "-", "-", "not certified", "-", "-"])
            continue
        bound = g.get("quality_bound")
        out.append([r["name"], f"{g.get('target', 0.0):.4f}",
                    "-" if bound is None else f"{bound:.4f}", f"{g['quality']:.4f}",
                    f"{g.get('quality_vs_best', 0.0):.1%} / {g.get('cost_vs_best', 0.0):.1%}",
                    "yes" if g.get("met_target") else "no", g.get("policy", "")])
    return out


def _seconds(p50: float | None, p99: float | None) -> str:
    return "-" if p50 is None or p99 is None else f"{p50:.2f} / {p99:.2f}"


def cascade_rows(result: BenchResult) -> list[list[str]]:
    """One row per cascade or cascade-routing entry, in :data:`CASCADE_COLUMNS` order: what
    its calibrated point pays in escalations and latency (a cascade's calls run in
    sequence), beside the best single model."""
    best = result["best_single"]
    reference = _seconds(best.get("latency_p50_s"), best.get("latency_p99_s"))
    out = []
    for r in result["routers"]:
        if r["kind"] == "router":
            continue
        cal = r["calibrated_95"]
        if cal is None or cal["quality"] is None:
            out.append([r["name"], "unreachable", "-", "-", "-", reference])
            continue
        out.append([r["name"], _calibrated(cal), _pct(cal.get("escalation_rate")),
                    f"{cal.get('mean_calls', 1.0):.2f}",
                    _seconds(cal.get("latency_p50_s"), cal.get("latency_p99_s")), reference])
    return out


def header_lines(result: BenchResult) -> list[str]:
    best, oracle = result["best_single"], result["oracle"]
    return [
        f"{result['dataset']}: {result['n_prompts']} prompts in the {result['split']} split "
        f"({result['n_train']} train, {result['n_validation']} validation), "
        f"{len(result['models'])} models",
        f"best single: {best['name']} quality {best['quality']:.4f} at "
        f"${best['cost_usd']:.3g}/query; oracle: quality {oracle['quality']:.4f} at "
        f"${oracle['cost_usd']:.3g}/query; zero-router AIQ {result['zero_router_aiq']:.4f}"
        + (f" (RouterBench code convention: {result['zero_router_aiq_routerbench']:.4f})"
           if "zero_router_aiq_routerbench" in result else ""),
    ]


def print_table(result: BenchResult, console: Console | None = None) -> None:
    """The benchmark table, as the CLI prints it."""
    # Not a terminal (a file, CI): wide enough that rows do not fold.
    console = console or Console(width=None if Console().is_terminal else 160)
    for line in header_lines(result):
        console.print(line, highlight=False)
    table = Table(show_lines=False)
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for row in rows(result):
        table.add_row(*row)
    console.print(table)
    cascades = cascade_rows(result)
    if cascades:
        ct = Table(title="cascades at their calibrated point (latency: visited calls summed)")
        for col in CASCADE_COLUMNS:
            ct.add_column(col, overflow="fold")
        for row in cascades:
            ct.add_row(*row)
        console.print(ct)
    guaranteed = guarantee_rows(result)
    if guaranteed:
        gt = Table(title=f"95 % point certified with confidence {result.get('confidence')} on "
                         "validation (Learn then Test), realised on the evaluated split")
        for col in GUARANTEE_COLUMNS:
            gt.add_column(col, overflow="fold")
        for row in guaranteed:
            gt.add_row(*row)
        console.print(gt)
    pairs = [r for r in result["routers"] if "pair" in r]
    if pairs:
        p0 = pairs[0]["pair"]
        pt = Table(title=f"weak {p0['weak']} vs strong {p0['strong']} (RouteLLM metrics)")
        for col in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
            pt.add_column(col)
        for r in pairs:
            p = r["pair"]
            pt.add_row(r["name"], f"{p['apgr']:.4f}", _pct(p["cpt_50"]), _pct(p["cpt_80"]))
        console.print(pt)


def markdown(result: BenchResult, plot_path: str | Path | None = None) -> str:
    """A self-contained Markdown report of the result."""
    lines = [f"# routecast bench: {result['dataset']} ({result['split']} split)", ""]
    lines += [f"- {line}" for line in header_lines(result)]
    lines += ["- routers are fitted on train; the calibrated point is solved on validation "
              "only; every other figure is measured on the evaluated split",
              f"- confidence intervals: {result['n_boot']} bootstrap resamples of the evaluated "
              f"prompts, seed {result['seed']}", "", "## Models", "",
              "| model | quality | cost USD/query |", "|---|---|---|"]
    lines += [f"| {m['name']} | {m['quality']:.4f} | {m['cost_usd']:.6g} |"
              for m in result["models"]]
    lines += ["", "## Routers", "", "| " + " | ".join(COLUMNS) + " |",
              "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(result)]
    cascades = cascade_rows(result)
    if cascades:
        lines += ["", "## Cascades at their calibrated point", "",
                  "Escalated: share of prompts that called more than one model. Latency is "
                  "end to end, the visited calls' recorded latencies summed.", "",
                  "| " + " | ".join(CASCADE_COLUMNS) + " |", "|" + "---|" * len(CASCADE_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in cascades]
    guaranteed = guarantee_rows(result)
    if guaranteed:
        lines += ["", f"## 95 % point certified with confidence {result.get('confidence')}", "",
                  "Chosen on validation by a Learn-then-Test fixed-sequence search with a "
                  "one-sided bound (src/routecast/guarantee.py); target and bound are "
                  "validation figures, the quality is realised on the evaluated split.", "",
                  "| " + " | ".join(GUARANTEE_COLUMNS) + " |",
                  "|" + "---|" * len(GUARANTEE_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in guaranteed]
    pairs = [r for r in result["routers"] if "pair" in r]
    if pairs:
        p0 = pairs[0]["pair"]
        lines += ["", f"## Weak/strong pair: {p0['weak']} vs {p0['strong']}", "",
                  "| router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['pair']['apgr']:.4f} | {_pct(r['pair']['cpt_50'])} | "
                  f"{_pct(r['pair']['cpt_80'])} |" for r in pairs]
    if plot_path is not None:
        lines += ["", "## Cost-quality plot", "", f"![cost-quality]({Path(plot_path).name})"]
    return "\n".join(lines) + "\n"
