"""Hierarchical inference (HI), device first, replayed over recorded outcomes.

The device model answers every query. If its confidence is below a threshold ``theta`` the
query is offloaded: the device uploads the prompt, the cloud model answers, the device
downloads the answer, and the cloud's answer is the one kept. Per query, with device profile
``P`` (:mod:`routecast.hi.profile`), link ``L`` and the recorded token counts:

* device latency ``l_d = P.latency_s(tokens_in_d, tokens_out_d)``, device compute energy
  ``e_d = P.energy_j(tokens_in_d, tokens_out_d)``;
* network time ``n = L.transfer_s(up, down)`` with ``up``/``down`` the request and response
  bytes, cloud latency ``l_c`` = the cloud model's recorded ``latency_s`` (it already holds
  the recording client's own network path, so adding ``n`` over-counts by at most one wired
  round trip), radio energy ``e_r = L.energy_j(up, down, connected_s=n + l_c)``;
* kept locally: latency ``l_d``, energy ``e_d``, dollars 0, quality of the device answer;
* offloaded: latency ``l_d + n + l_c``, energy ``e_d + e_r``, dollars = the cloud call's
  recorded ``cost_usd``, quality of the cloud answer.

Two baselines frame it: *device only* (never offload) and *cloud only* (send every query
straight to the cloud, no device attempt: latency ``n + l_c``, energy ``e_r``).

**IES**, the survey's Inference Efficiency Score (Behera et al., arXiv:2506.06579):
``IES = [alpha * Q + (1 - alpha) * R] / C``, with ``Q`` the task quality, ``R`` a
responsiveness measure and ``C`` the (composite) cost of the model used. The survey gives this
form; how ``R`` and ``C`` are measured is ours, and we apply it to a policy's means over the
evaluated queries (a ratio of means, so a few near-free queries cannot dominate):

* ``Q`` = mean quality (accuracy, for 0/1 outcomes);
* ``R`` = mean over queries of ``min(1, latency_target_s / latency_s)``: 1 for an answer
  within the target, proportionally less for a slower one;
* ``C = w * E / E_ref + (1 - w) * D / D_ref``, with ``E`` the mean device energy per query,
  ``D`` the mean dollars per query, and ``E_ref``, ``D_ref`` the larger of the device-only and
  cloud-only means, so each term is in [0, 1] for the two baselines and ``C`` weighs joules
  against dollars as ``w`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError, DataError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.hi.profile import Device, Profile

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The arrays a dataset must record for an HI simulation.
NEEDED = ("latency_s", "tokens_in", "tokens_out", "confidence")


@dataclass(frozen=True, eq=False)
class HIInputs:
    """Everything a threshold policy needs, per query, for one device/model pairing."""

    device: str
    device_model: str
    cloud_model: str
    confidence: FloatArray
    device_quality: FloatArray
    cloud_quality: FloatArray
    device_latency_s: FloatArray
    device_energy_j: FloatArray
    network_s: FloatArray
    radio_energy_j: FloatArray
    cloud_latency_s: FloatArray
    cloud_cost_usd: FloatArray
    task: tuple[str, ...] | None = None

    @property
    def n_queries(self) -> int:
        return len(self.confidence)


def prepare(data: Dataset, device_model: str, cloud_model: str, device: Device,
            cloud_profile: Profile | None = None) -> HIInputs:
    """Per-query figures of ``device_model`` on ``device`` offloading to ``cloud_model``.

    Dollars are the cloud call's recorded ``cost_usd`` unless ``cloud_profile`` is given, in
    which case they are priced from the recorded token counts at its per-token prices.
    """
    if device_model == cloud_model:
        raise ConfigError(f"the device and cloud models are both {device_model!r}; offloading "
                          "to the same model gains nothing. Pick a larger cloud model")
    missing = [name for name in NEEDED if getattr(data, name) is None]
    if missing:
        raise DataError(
            f"records no {', '.join(missing)}, which an HI simulation needs",
            where=f"dataset {data.name!r}",
            fix="use outcomes with latency, token counts and confidence, e.g. "
                "../shared/data/llm-cascades-zellinger")
    d, c = data.model_index(device_model), data.model_index(cloud_model)
    prof = device.profile(device_model)
    arrays = {name: np.asarray(getattr(data, name), dtype=np.float64) for name in NEEDED}
    for name, arr in arrays.items():
        bad = np.isnan(arr[:, [d, c]]).any(axis=1)
        if bad.any():
            raise DataError(
                f"{name} is missing for {int(bad.sum())} prompts of {device_model!r} or "
                f"{cloud_model!r} (e.g. {data.ids[int(np.argmax(bad))]!r})",
                where=f"dataset {data.name!r}", fix="drop those prompts before simulating")
    conf = arrays["confidence"][:, d]
    if conf.min() < 0 or conf.max() > 1:
        raise DataError(f"confidence of {device_model!r} must lie in [0, 1]",
                        where=f"dataset {data.name!r}")
    t_in, t_out = arrays["tokens_in"], arrays["tokens_out"]
    up, down = device.bytes_up(t_in[:, c]), device.bytes_down(t_out[:, c])
    network = device.link.transfer_s(up, down)
    cloud_latency = arrays["latency_s"][:, c]
    cost = (data.cost_usd[:, c] if cloud_profile is None
            else cloud_profile.cost_usd(t_in[:, c], t_out[:, c]))
    return HIInputs(
        device=device.name, device_model=device_model, cloud_model=cloud_model,
        confidence=conf, device_quality=data.quality[:, d].astype(np.float64),
        cloud_quality=data.quality[:, c].astype(np.float64),
        device_latency_s=prof.latency_s(t_in[:, d], t_out[:, d]),
        device_energy_j=prof.energy_j(t_in[:, d], t_out[:, d]),
        network_s=network,
        radio_energy_j=device.link.energy_j(up, down, connected_s=network + cloud_latency),
        cloud_latency_s=cloud_latency, cloud_cost_usd=np.asarray(cost, dtype=np.float64),
        task=data.task)


@dataclass(frozen=True, eq=False)
class Outcome:
    """What a policy did on each query: offloaded or not, and what that achieved and cost."""

    name: str
    threshold: float | None
    offloaded: BoolArray
    quality: FloatArray
    latency_s: FloatArray
    energy_j: FloatArray
    cost_usd: FloatArray


def run_threshold(inputs: HIInputs, threshold: float) -> Outcome:
    """The device-first policy: offload exactly the queries with ``confidence < threshold``."""
    if not np.isfinite(threshold):
        raise ConfigError(f"the offload threshold must be a finite number, got {threshold!r}")
    off = inputs.confidence < threshold
    remote_latency = inputs.network_s + inputs.cloud_latency_s
    return Outcome(
        name=f"HI theta={threshold:.3g}" if threshold <= 1 else "HI offload all",
        threshold=float(threshold), offloaded=off,
        quality=np.where(off, inputs.cloud_quality, inputs.device_quality),
        latency_s=inputs.device_latency_s + np.where(off, remote_latency, 0.0),
        energy_j=inputs.device_energy_j + np.where(off, inputs.radio_energy_j, 0.0),
        cost_usd=np.where(off, inputs.cloud_cost_usd, 0.0))


def device_only(inputs: HIInputs) -> Outcome:
    """Every query answered on the device."""
    out = run_threshold(inputs, 0.0)  # confidence is never < 0
    return Outcome("device only", None, out.offloaded, out.quality, out.latency_s,
                   out.energy_j, out.cost_usd)


def cloud_only(inputs: HIInputs) -> Outcome:
    """Every query sent straight to the cloud, with no device attempt first."""
    return Outcome(
        name="cloud only", threshold=None, offloaded=np.ones(inputs.n_queries, dtype=bool),
        quality=inputs.cloud_quality, latency_s=inputs.network_s + inputs.cloud_latency_s,
        energy_j=inputs.radio_energy_j, cost_usd=inputs.cloud_cost_usd)


# -- the IES score ----------------------------------------------------------------------------

@dataclass(frozen=True)
class IESConfig:
    """The weights and references of the IES score (see the module docstring)."""

    alpha: float = 0.5
    latency_target_s: float = 1.0
    energy_weight: float = 0.5

    def __post_init__(self) -> None:
        for name in ("alpha", "energy_weight"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"IES {name} must lie in [0, 1], got {v}")
        if not self.latency_target_s > 0:
            raise ConfigError(f"IES latency target must be > 0 s, got {self.latency_target_s}")


def responsiveness(latency_s: FloatArray, latency_target_s: float) -> float:
    """Mean of ``min(1, latency_target_s / latency_s)`` over the queries."""
    lat = np.maximum(np.asarray(latency_s, dtype=np.float64), 1e-12)
    return float(np.minimum(1.0, latency_target_s / lat).mean())


def composite_cost(energy_j: float, cost_usd: float, energy_ref_j: float, usd_ref: float,
                   energy_weight: float) -> float:
    """``w * E / E_ref + (1 - w) * D / D_ref``; a term whose reference is 0 counts 0."""
    e = energy_j / energy_ref_j if energy_ref_j > 0 else 0.0
    d = cost_usd / usd_ref if usd_ref > 0 else 0.0
    return energy_weight * e + (1 - energy_weight) * d


def ies(quality: float, resp: float, cost: float, alpha: float) -> float:
    """``[alpha * quality + (1 - alpha) * resp] / cost`` (the survey's form); inf at cost 0."""
    num = alpha * quality + (1 - alpha) * resp
    return float("inf") if cost <= 0 else num / cost


# -- summaries --------------------------------------------------------------------------------

@dataclass(frozen=True)
class References:
    """The IES cost references: the larger of the device-only and cloud-only means."""

    energy_j: float
    cost_usd: float

    @classmethod
    def of(cls, inputs: HIInputs) -> References:
        dev, cloud = device_only(inputs), cloud_only(inputs)
        return cls(max(float(dev.energy_j.mean()), float(cloud.energy_j.mean())),
                   max(float(dev.cost_usd.mean()), float(cloud.cost_usd.mean())))


def summarize(out: Outcome, refs: References, cfg: IESConfig | None = None) -> dict[str, Any]:
    """The reported figures of one policy, as a JSON-ready dict."""
    cfg = cfg or IESConfig()
    q = float(out.quality.mean())
    e = float(out.energy_j.mean())
    usd = float(out.cost_usd.mean())
    p50, p99 = (float(x) for x in np.percentile(out.latency_s, [50, 99]))
    resp = responsiveness(out.latency_s, cfg.latency_target_s)
    c = composite_cost(e, usd, refs.energy_j, refs.cost_usd, cfg.energy_weight)
    return {
        "name": out.name, "threshold": out.threshold, "accuracy": q,
        "offload_share": float(out.offloaded.mean()), "energy_j": e,
        "latency_p50_s": p50, "latency_p99_s": p99, "cost_usd": usd,
        "responsiveness": resp, "composite_cost": c, "ies": ies(q, resp, c, cfg.alpha),
    }


def threshold_grid(confidence: FloatArray, n: int = 21) -> FloatArray:
    """About ``n`` thresholds at the confidence quantiles, up to just above 1 (offload all).

    0 is left out: it offloads nothing, which is the device-only baseline. Tied quantiles
    collapse into one threshold."""
    if n < 2:
        raise ConfigError(f"a threshold sweep needs at least 2 points, got {n}")
    inner = np.quantile(np.asarray(confidence, dtype=np.float64), np.linspace(0, 1, n)[1:-1])
    grid = np.unique(np.r_[inner, np.nextafter(1.0, 2.0)])
    return np.asarray(grid[grid > 0], dtype=np.float64)


def table(inputs: HIInputs, thresholds: Sequence[float],
          cfg: IESConfig | None = None) -> list[dict[str, Any]]:
    """Rows for the device-only and cloud-only baselines, then one per threshold."""
    refs = References.of(inputs)
    outs = [device_only(inputs), cloud_only(inputs)]
    outs += [run_threshold(inputs, float(t)) for t in thresholds]
    return [summarize(o, refs, cfg) for o in outs]
