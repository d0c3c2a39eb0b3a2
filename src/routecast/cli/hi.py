"""``routecast hi``: device-first hierarchical inference replayed over recorded outcomes.

Prints one table per device profile (device only, cloud only, and the HI policy at one
threshold or a sweep of them) and, with ``--bandit``, the regret of the online threshold
learner (HI-LCB) over seeded query orders, with and without a task-mix shift halfway.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from routecast.cli.common import err_console, format_option, load_data, write_json
from routecast.errors import ConfigError

if TYPE_CHECKING:
    pass

TABLE_COLUMNS = ("policy", "accuracy", "offloaded", "device J/query", "latency p50 s",
                 "latency p99 s", "cloud $/1k queries", "IES")


def _names(csv: str, what: str) -> list[str]:
    names = [p.strip() for p in csv.split(",") if p.strip()]
    if not names:
        raise ConfigError(f"{what} is empty; give a comma-separated list")
    return names


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 170)
    console.print(f"{result['dataset']} ({result['n_prompts']} prompts, split "
                  f"{result['split']}): device {result['device_model']} -> cloud "
                  f"{result['cloud_model']}", highlight=False)
    for name, prof in result["profiles"].items():
        table = Table(title=f"{name}: {prof['description']}", title_justify="left")
        for col in TABLE_COLUMNS:
            table.add_column(col, justify="left" if col == "policy" else "right")
        for r in prof["rows"]:
            table.add_row(r["name"], f"{r['accuracy']:.3f}", f"{r['offload_share']:.1%}",
                          f"{r['energy_j']:.2f}", f"{r['latency_p50_s']:.2f}",
                          f"{r['latency_p99_s']:.2f}", f"{r['cost_usd'] * 1e3:.3f}",
                          f"{r['ies']:.3f}")
        console.print(table)
    ies = result["ies"]
    console.print(f"IES = [{ies['alpha']} * accuracy + {1 - ies['alpha']:.2g} * "
                  f"responsiveness] / cost; responsiveness = mean min(1, "
                  f"{ies['latency_target_s']} s / latency); cost = {ies['energy_weight']} * "
                  f"J / J_ref + {1 - ies['energy_weight']:.2g} * $ / $_ref", highlight=False)
    if "bandit" in result:
        _print_bandit(console, result["bandit"])


def _print_bandit(console: Any, b: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"HI-LCB, offload cost beta={b['beta']}, "
                        f"{b['n_bins']} bins, exploration {b['exploration']}, "
                        f"discount {b['discount']}", title_justify="left")
    for col in ("setting", "T", "R(T/4)", "R(T/2)", "R(T)", "R(T)/T", "R(T)/R(T/2)",
                "cost/query", "best fixed", "offloaded"):
        table.add_column(col, justify="left" if col == "setting" else "right")

    def ms(x: dict[str, float] | None, fmt: str = "{:.1f}") -> str:
        return "-" if x is None else f"{fmt.format(x['mean'])} ± {fmt.format(x['sd'])}"

    for name, s in b["settings"].items():
        at = s["regret_at"]
        table.add_row(name, str(s["horizon"]), ms(at["T/4"]), ms(at["T/2"]), ms(at["T"]),
                      ms(s["regret_per_query"], "{:.4f}"), ms(s["growth_T_over_T2"], "{:.2f}"),
                      ms(s["learner_cost"], "{:.4f}"), ms(s["best_fixed_cost"], "{:.4f}"),
                      ms(s["offload_share"], "{:.2f}"))
    console.print(table)
    console.print(f"mean ± sd over {len(next(iter(b['settings'].values()))['seeds'])} seeded "
                  "query orders; regret against the best fixed bin-edge threshold in hindsight",
                  highlight=False)


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against device energy per profile; regret curves when the bandit ran."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    import numpy as np

    has_bandit = "bandit" in result
    fig, axes = plt.subplots(1, 3 if has_bandit else 1, figsize=(16 if has_bandit else 7, 5),
                             dpi=110, squeeze=False)
    ax = axes[0, 0]
    for k, (name, prof) in enumerate(result["profiles"].items()):
        colour = plt.get_cmap("tab10")(k)
        rows = prof["rows"]
        hi_rows = [r for r in rows if r["threshold"] is not None]
        ax.plot([r["energy_j"] for r in hi_rows], [r["accuracy"] for r in hi_rows], "o-",
                color=colour, ms=3, label=f"{name}: HI thresholds")
        for r, marker in zip(rows[:2], ("s", "^"), strict=True):
            ax.scatter(r["energy_j"], r["accuracy"], marker=marker, s=60, color=colour,
                       edgecolor="black", zorder=3, label=f"{name}: {r['name']}")
    energies = [r["energy_j"] for p in result["profiles"].values() for r in p["rows"]]
    # Log scale only where the energies span orders of magnitude (Wi-Fi offloads vs local).
    wide = min(energies) > 0 and max(energies) / min(energies) > 20
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel("device energy per query (J" + (", log scale)" if wide else ")"))
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result['device_model']} -> {result['cloud_model']}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    if has_bandit:
        b = result["bandit"]
        for k, (name, s) in enumerate(b["settings"].items()):
            t = np.asarray(s["curve"]["t"], dtype=float)
            mean, sd = np.asarray(s["curve"]["mean"]), np.asarray(s["curve"]["sd"])
            colour = plt.get_cmap("tab10")(k)
            axes[0, 1].plot(t, mean, color=colour, label=name)
            axes[0, 1].fill_between(t, mean - sd, mean + sd, color=colour, alpha=0.2)
            axes[0, 2].plot(t, mean / t, color=colour, label=name)
            if s["shift"]:
                for a in axes[0, 1:]:
                    a.axvline(s["horizon"] / 2, color=colour, ls=":", lw=1)
        axes[0, 1].set_title(f"HI-LCB regret vs best fixed threshold (beta={b['beta']})",
                             fontsize=9)
        axes[0, 1].set_ylabel("cumulative regret R(t), mean ± sd")
        axes[0, 2].set_title("R(t) / t", fontsize=9)
        axes[0, 2].set_yscale("log")
        for a in axes[0, 1:]:
            a.set_xlabel("queries t")
            a.legend(fontsize=8)
            a.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


@click.command("hi")
@click.argument("data", type=click.Path(exists=True))
@click.option("--device-model", required=True, help="model that answers first, on the device")
@click.option("--cloud-model", required=True, help="model that takes offloaded queries")
@click.option("--profiles", default="phone,laptop", show_default=True,
              help="comma-separated device profiles")
@click.option("--threshold", type=float, default=None,
              help="offload when confidence < X [default: 0.5]")
@click.option("--sweep", is_flag=True, help="a range of thresholds instead of one")
@click.option("--points", default=11, show_default=True, help="thresholds in a sweep")
@click.option("--bandit", "run_bandit", is_flag=True,
              help="also learn the threshold online (HI-LCB) and report its regret")
@click.option("--beta", default=0.3, show_default=True, help="offload cost of the bandit")
@click.option("--bins", "n_bins", default=10, show_default=True,
              help="confidence bins (thresholds) of the bandit")
@click.option("--exploration", default=0.5, show_default=True,
              help="LCB radius sqrt(exploration * ln t / n)")
@click.option("--discount", default=1.0, show_default=True,
              help="evidence decay per query (1: none)")
@click.option("--seeds", default=10, show_default=True, help="seeded query orders")
@click.option("--horizon", type=int, default=None,
              help="queries per bandit run [default: all; more draws with replacement]")
@click.option("--split", default="all", show_default=True,
              type=click.Choice(["all", "train", "validation", "test"]),
              help="prompts to replay")
@click.option("--ies-alpha", default=0.5, show_default=True, help="IES weight of accuracy")
@click.option("--latency-target", default=1.0, show_default=True,
              help="IES: seconds within which an answer counts as fully responsive")
@click.option("--energy-weight", default=0.5, show_default=True,
              help="IES: weight of energy against dollars in the cost")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write results JSON")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="write a PNG plot")
@format_option
@click.option("--seed", default=0, show_default=True, help="seed of the dataset's splits")
def hi_cmd(data: str, device_model: str, cloud_model: str, profiles: str,
           threshold: float | None, sweep: bool, points: int, run_bandit: bool, beta: float,
           n_bins: int, exploration: float, discount: float, seeds: int,
           horizon: int | None, split: str, ies_alpha: float, latency_target: float,
           energy_weight: float, json_path: str | None, plot_path: str | None, fmt: str,
           seed: int) -> None:
    """Simulate device-first hierarchical inference over the recorded outcomes in DATA."""
    from routecast.hi import simulation as hi

    if threshold is not None and sweep:
        raise ConfigError("give either --threshold or --sweep, not both")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if not 0 <= beta <= 1:
        raise ConfigError(f"--beta must lie in [0, 1], got {beta}")
    cfg = hi.IESConfig(alpha=ies_alpha, latency_target_s=latency_target,
                       energy_weight=energy_weight)
    names = _names(profiles, "--profiles")
    ds = load_data(data, fmt, seed)
    if split != "all":
        ds = ds.subset(split)
    from routecast.hi.experiments import simulate_profiles

    thresholds = None if sweep else [0.5 if threshold is None else threshold]
    result: dict[str, Any] = {
        "dataset": ds.name, "split": split, "n_prompts": ds.n_prompts,
        "device_model": device_model, "cloud_model": cloud_model,
        "ies": {"alpha": ies_alpha, "latency_target_s": latency_target,
                "energy_weight": energy_weight},
        "profiles": simulate_profiles(ds, device_model, cloud_model, names, thresholds, points,
                                      cfg),
    }
    if run_bandit:
        from routecast.hi.experiments import bandit_section

        if ds.task is None:
            err_console.print("no task labels: the mix-shift run is skipped")
        with err_console.status("running the threshold learner"):
            result["bandit"] = bandit_section(
                ds, device_model, cloud_model, beta=beta, n_bins=n_bins,
                exploration=exploration, discount=discount, seeds=seeds, horizon=horizon)
    print_tables(result)
    if json_path:
        write_json(json_path, result)
    if plot_path:
        plot(result, plot_path)
        err_console.print(f"wrote {plot_path}")
