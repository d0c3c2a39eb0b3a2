"""The cost-quality plot of a benchmark result (PNG, log cost axis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routecast import metrics
from routecast.bench.schema import QUALITY_FRACTION, BenchResult


def plot(result: BenchResult, path: str | Path) -> Path:
    """Single models as points, the oracle, each router's hull, calibrated points as stars."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for m in result["models"]:
        ax.scatter(m["cost_usd"], m["quality"], color="black", s=18, zorder=3)
        ax.annotate(m["name"].split("/")[-1], (m["cost_usd"], m["quality"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    costs = np.array([m["cost_usd"] for m in result["models"]])
    quals = np.array([m["quality"] for m in result["models"]])
    zero = metrics.nondecreasing_hull(costs, quals)
    ax.plot(zero[:, 0], zero[:, 1], color="grey", ls=":", label="zero router (single models)")
    o = result["oracle"]
    ax.scatter(o["cost_usd"], o["quality"], marker="*", s=160, color="gold",
               edgecolor="black", zorder=4, label="oracle")
    colours = plt.get_cmap("tab10")
    for k, r in enumerate(r for r in result["routers"] if not r.get("evaluation_only")):
        curve = np.asarray(r["curve"])
        # The hull with the single models: every entry may mix with them (bench/curves.py).
        hull = metrics.nondecreasing_hull(np.r_[curve[:, 0], costs], np.r_[curve[:, 1], quals])
        colour = colours(k % 10)
        # Cascades dashed, cascade routing dash-dotted, routers solid.
        style = {"cascade": "--", "cascade_routing": "-."}.get(r["kind"], "-")
        ax.plot(hull[:, 0], hull[:, 1], color=colour, lw=1.6, ls=style,
                label=f"{r['name']} (AIQ {r['aiq']:.3f})")
        ax.scatter(curve[:, 0], curve[:, 1], color=colour, s=4, alpha=0.4)
        cal = r["calibrated_95"]
        if cal is not None and cal["quality"] is not None and cal["cost_usd"] is not None:
            ax.scatter(cal["cost_usd"], cal["quality"], marker="P", s=90, color=colour,
                       edgecolor="black", zorder=5)
    best = result["best_single"]
    ax.axhline(QUALITY_FRACTION * best["quality"], color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{result['dataset']} - {result['split']} split "
                 f"(+ = calibrated on validation for 95% of {best['name']})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
