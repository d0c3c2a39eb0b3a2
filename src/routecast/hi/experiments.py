"""The experiments ``routecast hi`` runs: per-profile device-first tables and HI-LCB's regret.

Both return JSON-ready dicts; :mod:`routecast.cli.hi` prints and plots them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.hi.simulation import IESConfig


def simulate_profiles(ds: Dataset, device_model: str, cloud_model: str, profiles: list[str],
                      thresholds: list[float] | None, points: int, cfg: IESConfig
                      ) -> dict[str, Any]:
    """The per-profile tables as a JSON-ready dict; ``thresholds=None`` sweeps ``points``
    thresholds spread over the device model's confidences."""
    from routecast.hi import simulation as hi
    from routecast.hi.profile import get_device

    out: dict[str, Any] = {}
    for name in profiles:
        device = get_device(name)
        inputs = hi.prepare(ds, device_model, cloud_model, device)
        if thresholds is None:
            thresholds = [float(t) for t in hi.threshold_grid(inputs.confidence, points)]
        out[name] = {"description": device.description, "link": device.link.name,
                     "rows": hi.table(inputs, thresholds, cfg)}
    return out


def bandit_section(ds: Dataset, device_model: str, cloud_model: str, *, beta: float,
                   n_bins: int, exploration: float, discount: float, seeds: int,
                   horizon: int | None) -> dict[str, Any]:
    """HI-LCB's regret with and without a mix shift, as a JSON-ready dict."""
    from routecast.hi import bandit

    if ds.confidence is None:
        raise ConfigError("the bandit needs the device model's confidence; this dataset has "
                          "none (use e.g. ../shared/data/llm-cascades-zellinger)")
    d = ds.model_index(device_model)
    conf, quality = ds.confidence[:, d], ds.quality[:, d]
    # One offload cost for every query: with per-query costs the learner's rule depends on
    # the cost, a richer class than the fixed thresholds regret is measured against.
    stream = bandit.Stream.of(conf, quality, beta)
    common: dict[str, Any] = {"horizon": horizon or len(stream), "seeds": list(range(seeds)),
                              "n_bins": n_bins, "exploration": exploration,
                              "discount": discount}
    settings = {"iid": bandit.regret_experiment(stream, **common)}
    if ds.task is not None:  # without task labels there is no mix to shift
        first = bandit.easy_first_tasks(ds.task, quality)
        settings["mix shift at T/2"] = bandit.regret_experiment(
            stream, shift_task=ds.task, shift_first=first, **common)
    return {"device_model": device_model, "cloud_model": cloud_model, "beta": beta,
            "n_bins": n_bins, "exploration": exploration, "discount": discount,
            "settings": settings}
