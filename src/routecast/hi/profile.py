"""Profiles: what one model costs where it runs, and the network between device and cloud.

A :class:`Profile` describes one model at one placement (``device``, ``edge`` or ``cloud``):
time to first token (a fixed part plus prefill time per prompt token), time per output token,
energy per token *on the device* (zero off it) and dollars per token (cloud). A :class:`Link`
is the radio between the device and the remote model: round-trip time, up/down bandwidth and
the radio's energy. A :class:`Device` bundles a link with the profiles of the models the
device can run, and lists every constant it was built from with its source
(:attr:`Device.constants`), so tables and docs quote the same numbers the simulation uses.

Two built-in devices, :data:`PHONE` and :data:`LAPTOP`, carry published measurements where we
have them and say plainly where a figure is an assumption (``basis="assumption"``). Energy is
modelled as power x busy time (J/token = W / (tokens/s)); the radio follows the LTE/Wi-Fi power
model of Huang et al. (MobiSys 2012): ``P = alpha_u * r_up + alpha_d * r_down + beta`` while
connected, plus a promotion and a tail after the last packet. With ``alpha`` in mW per Mbit/s,
the energy per byte is ``alpha * 8e-9`` J whatever the rate, which is why a byte cost needs no
bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError
from routecast.registry import Registry

FloatArray = npt.NDArray[np.float64]
Placement = Literal["device", "edge", "cloud"]
Basis = Literal["measured", "derived", "assumption"]
PLACEMENTS: tuple[Placement, ...] = ("device", "edge", "cloud")


def _check_nonnegative(owner: str, **values: float) -> None:
    for name, v in values.items():
        if not (v >= 0 and math.isfinite(v)):  # also rejects NaN
            raise ConfigError(f"{owner}: {name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class Profile:
    """What one model costs at one placement.

    Latency of one call: ``ttft_s + tokens_in * s_per_input_token + tokens_out *
    s_per_output_token``. Energy (device only): ``tokens_in * energy_j_per_input_token +
    tokens_out * energy_j_per_output_token``. Dollars (cloud): the same with the USD prices.
    """

    model: str
    placement: Placement
    ttft_s: float = 0.0
    s_per_input_token: float = 0.0
    s_per_output_token: float = 0.0
    energy_j_per_input_token: float = 0.0
    energy_j_per_output_token: float = 0.0
    usd_per_input_token: float = 0.0
    usd_per_output_token: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"profile {self.model!r}: placement must be one of "
                              f"{', '.join(PLACEMENTS)}, got {self.placement!r}")
        _check_nonnegative(
            f"profile {self.model!r}", ttft_s=self.ttft_s,
            s_per_input_token=self.s_per_input_token,
            s_per_output_token=self.s_per_output_token,
            energy_j_per_input_token=self.energy_j_per_input_token,
            energy_j_per_output_token=self.energy_j_per_output_token,
            usd_per_input_token=self.usd_per_input_token,
            usd_per_output_token=self.usd_per_output_token)
        if self.placement != "device" and (self.energy_j_per_input_token
                                           or self.energy_j_per_output_token):
            # The device's battery is what HI accounts for; a remote model's energy is not
            # the device's, so a non-zero figure here is a mistake, not a feature.
            raise ConfigError(f"profile {self.model!r}: energy per token is the device's energy; "
                              f"set it only for placement 'device', not {self.placement!r}")

    def latency_s(self, tokens_in: FloatArray, tokens_out: FloatArray) -> FloatArray:
        """Seconds per call from the token counts (arrays broadcast)."""
        return np.asarray(self.ttft_s + np.asarray(tokens_in) * self.s_per_input_token
                          + np.asarray(tokens_out) * self.s_per_output_token, dtype=np.float64)

    def energy_j(self, tokens_in: FloatArray, tokens_out: FloatArray) -> FloatArray:
        """Joules the device spends computing one call (zero off the device)."""
        return np.asarray(np.asarray(tokens_in) * self.energy_j_per_input_token
                          + np.asarray(tokens_out) * self.energy_j_per_output_token,
                          dtype=np.float64)

    def cost_usd(self, tokens_in: FloatArray, tokens_out: FloatArray) -> FloatArray:
        """Dollars of one call at the profile's prices."""
        return np.asarray(np.asarray(tokens_in) * self.usd_per_input_token
                          + np.asarray(tokens_out) * self.usd_per_output_token,
                          dtype=np.float64)


@dataclass(frozen=True)
class Link:
    """The network between the device and the remote model.

    One offload sends the prompt, waits for the remote answer and receives it. Time:
    ``rtt_s + 8 * bytes_up / uplink_bps + 8 * bytes_down / downlink_bps`` (plus the remote's
    own latency, which the caller adds). Radio energy: ``radio_power_w`` for as long as the
    exchange lasts (waiting included: the radio stays connected), ``energy_j_per_byte_up/down``
    per byte moved, and ``energy_j_per_offload`` once (state promotion and the tail the radio
    spends connected after the last packet).
    """

    name: str
    rtt_s: float
    uplink_bps: float
    downlink_bps: float
    radio_power_w: float
    energy_j_per_byte_up: float
    energy_j_per_byte_down: float
    energy_j_per_offload: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        _check_nonnegative(
            f"link {self.name!r}", rtt_s=self.rtt_s, radio_power_w=self.radio_power_w,
            energy_j_per_byte_up=self.energy_j_per_byte_up,
            energy_j_per_byte_down=self.energy_j_per_byte_down,
            energy_j_per_offload=self.energy_j_per_offload)
        for name, bps in (("uplink_bps", self.uplink_bps), ("downlink_bps", self.downlink_bps)):
            if not (bps > 0 and math.isfinite(bps)):
                raise ConfigError(f"link {self.name!r}: {name} must be > 0 bit/s, got {bps!r}")

    def transfer_s(self, bytes_up: FloatArray, bytes_down: FloatArray) -> FloatArray:
        """Round trip plus serialisation of the request and the answer, in seconds."""
        return np.asarray(self.rtt_s + 8.0 * np.asarray(bytes_up) / self.uplink_bps
                          + 8.0 * np.asarray(bytes_down) / self.downlink_bps, dtype=np.float64)

    def energy_j(self, bytes_up: FloatArray, bytes_down: FloatArray,
                 connected_s: FloatArray) -> FloatArray:
        """Radio joules of one offload that keeps the radio connected for ``connected_s``."""
        return np.asarray(self.radio_power_w * np.asarray(connected_s)
                          + self.energy_j_per_byte_up * np.asarray(bytes_up)
                          + self.energy_j_per_byte_down * np.asarray(bytes_down)
                          + self.energy_j_per_offload, dtype=np.float64)


@dataclass(frozen=True)
class Constant:
    """One number a built-in device is made of, with where it comes from."""

    name: str
    value: float | None  # None: the entry states a derivation rule, not one number
    unit: str
    basis: Basis
    source: str


@dataclass(frozen=True)
class Device:
    """A class of device: its link to the cloud and the profiles of the models it runs.

    ``bytes_per_token`` turns token counts into payload bytes; ``request_overhead_bytes`` and
    ``response_overhead_bytes`` add the JSON envelope, HTTP headers and TLS records of one
    non-streamed chat completion.
    """

    name: str
    description: str
    link: Link
    models: dict[str, Profile]
    bytes_per_token: float = 4.0
    request_overhead_bytes: float = 0.0
    response_overhead_bytes: float = 0.0
    constants: tuple[Constant, ...] = field(default=())

    def __post_init__(self) -> None:
        for model, prof in self.models.items():
            if prof.placement != "device" or prof.model != model:
                raise ConfigError(f"device {self.name!r}: entry {model!r} must be a 'device' "
                                  f"profile of that model, got {prof.placement!r} {prof.model!r}")
        _check_nonnegative(f"device {self.name!r}", bytes_per_token=self.bytes_per_token,
                           request_overhead_bytes=self.request_overhead_bytes,
                           response_overhead_bytes=self.response_overhead_bytes)

    def profile(self, model: str) -> Profile:
        """The device profile of ``model``; a :class:`ConfigError` lists the ones it has."""
        try:
            return self.models[model]
        except KeyError:
            raise ConfigError(
                f"the {self.name} profile has no figures for {model!r}; it has "
                f"{', '.join(sorted(self.models))}. Pick one of those as the device model, or "
                "build a routecast.hi.profile.Device with a Profile for it") from None

    def bytes_up(self, tokens_in: FloatArray) -> FloatArray:
        return np.asarray(self.request_overhead_bytes
                          + np.asarray(tokens_in) * self.bytes_per_token, dtype=np.float64)

    def bytes_down(self, tokens_out: FloatArray) -> FloatArray:
        return np.asarray(self.response_overhead_bytes
                          + np.asarray(tokens_out) * self.bytes_per_token, dtype=np.float64)


# -- the built-in constants, each with its source ----------------------------------------------

# Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE
# Networks", MobiSys 2012 (power model, Tables 3-4; medians of their 4GTest users).
HUANG_2012 = "Huang et al., MobiSys 2012 (4G LTE performance and power)"
META_L32 = ("Llama 3.2 model card, 'Inference time' table (ExecuTorch, ARM CPU, OnePlus 12 / "
            "Snapdragon 8 Gen 3, SpinQuant 4-bit), github.com/meta-llama/llama-models "
            "models/llama3_2/MODEL_CARD.md")
LLAMACPP_M = ("llama.cpp 'Performance of llama.cpp on Apple Silicon M-series' benchmark "
              "(github.com/ggml-org/llama.cpp discussions/4167): LLaMA-2-7B Q4_0 on a base "
              "M2/M3 (100 GB/s): ~21 tok/s generation (tg128), ~180 tok/s prompt (pp512)")


def _mw_per_mbps_to_j_per_byte(alpha_mw_per_mbps: float) -> float:
    # alpha * r [mW] for 8 / (r * 1e6) [s per byte] -> alpha * 8e-9 [J per byte].
    return alpha_mw_per_mbps * 8e-9


def _device_model(model: str, power_w: float, prefill_tps: float, decode_tps: float,
                  source: str) -> Profile:
    """A device profile from measured speeds and a power draw: J/token = W / (tokens/s)."""
    return Profile(model=model, placement="device", ttft_s=0.0,
                   s_per_input_token=1.0 / prefill_tps, s_per_output_token=1.0 / decode_tps,
                   energy_j_per_input_token=power_w / prefill_tps,
                   energy_j_per_output_token=power_w / decode_tps, source=source)


_PHONE_POWER_W = 5.0
_PHONE_SPEEDS = {  # model -> (prefill tok/s, decode tok/s), SpinQuant rows of the model card
    "llama3.2-1b": (260.5, 50.2),
    "llama3.2-3b": (89.7, 19.7),
}
_LTE = {"alpha_up": 438.39, "alpha_down": 51.97, "beta": 1288.04,
        "promo_s": 0.2601, "promo_mw": 1210.7, "tail_s": 11.576, "tail_mw": 1060.04}

_PHONE_CONSTANTS = (
    Constant("decode speed, llama3.2-1b", 50.2, "tok/s", "measured", META_L32),
    Constant("prefill speed, llama3.2-1b", 260.5, "tok/s", "measured",
             META_L32 + "; TTFT 0.3 s for a 64-token prompt = 64 / 260.5"),
    Constant("decode speed, llama3.2-3b", 19.7, "tok/s", "measured", META_L32),
    Constant("prefill speed, llama3.2-3b", 89.7, "tok/s", "measured", META_L32),
    Constant("SoC power while generating", _PHONE_POWER_W, "W", "assumption",
             "assumed package power of a flagship phone SoC running 4-bit LLM inference on its "
             "CPU cores; not taken from a measurement table. Device energy scales linearly "
             "with it"),
    Constant("energy per token", None, "J/token", "derived",
             "power / speed, e.g. llama3.2-3b: 5 W / 19.7 tok/s = 0.254 J per output token, "
             "5 W / 89.7 tok/s = 0.056 J per prompt token"),
    Constant("LTE uplink", 6e6, "bit/s", "measured",
             HUANG_2012 + ": median LTE uplink throughput of 4GTest users, 6 Mbit/s"),
    Constant("LTE downlink", 13e6, "bit/s", "measured",
             HUANG_2012 + ": median LTE downlink throughput, 13 Mbit/s"),
    Constant("LTE round-trip time", 0.070, "s", "assumption",
             "typical LTE RTT to a cloud region (order of the RTTs Huang et al. report); an "
             "assumption, not their exact median"),
    Constant("LTE alpha_u", _LTE["alpha_up"], "mW per Mbit/s", "measured",
             HUANG_2012 + ", LTE power model (transcribed; = 3.5e-6 J per byte sent)"),
    Constant("LTE alpha_d", _LTE["alpha_down"], "mW per Mbit/s", "measured",
             HUANG_2012 + ", LTE power model (transcribed; = 4.2e-7 J per byte received)"),
    Constant("LTE beta (connected power)", _LTE["beta"], "mW", "measured",
             HUANG_2012 + ", LTE power model (transcribed); charged for the whole exchange, "
             "waiting for the cloud included"),
    Constant("LTE promotion", _LTE["promo_s"], "s", "measured",
             HUANG_2012 + f" (transcribed): {_LTE['promo_s'] * 1e3:.1f} ms at "
             f"{_LTE['promo_mw']:.1f} mW"),
    Constant("LTE tail", _LTE["tail_s"], "s", "measured",
             HUANG_2012 + f" (transcribed): {_LTE['tail_s']} s at {_LTE['tail_mw']:.2f} mW "
             "after the last packet; worst case for an isolated query (no other traffic to "
             "share it), and networks with shorter inactivity timers spend less"),
)

_LAPTOP_POWER_W = 15.0
# Memory-bound decode scales with the bytes of weights read per token; compute-bound prefill
# with the parameter count. Reference: LLaMA-2-7B Q4_0 (6.74 B params, 3.83 GB file).
_REF_PARAMS_B, _REF_BYTES_GB, _REF_PP, _REF_TG = 6.74, 3.83, 180.0, 21.0
_LAPTOP_SIZES = {  # model -> (parameters in billions, Q4_0 GGUF size in GB)
    "llama3.2-1b": (1.24, 0.77),
    "llama3.2-3b": (3.21, 1.92),
    "llama3.1-8b": (8.03, 4.66),
}
_WIFI = {"alpha_up": 283.17, "alpha_down": 137.01, "beta": 132.86}

_LAPTOP_CONSTANTS = (
    Constant("reference speed (7B Q4_0, base M2/M3)", _REF_TG, "tok/s", "measured",
             LLAMACPP_M + " (quoted from that benchmark table; not re-run here)"),
    Constant("reference prompt speed (7B Q4_0, base M2/M3)", _REF_PP, "tok/s", "measured",
             LLAMACPP_M),
    Constant("decode speed of a smaller model", None, "tok/s", "derived",
             "21 tok/s x 3.83 GB / (Q4_0 file size): decode is memory-bound, so speed scales "
             "with the bytes read per token (an approximation that ignores fixed per-token "
             "overheads, so it flatters the 1B model)"),
    Constant("prefill speed of a smaller model", None, "tok/s", "derived",
             "180 tok/s x 6.74 B / (parameters in B): prefill is compute-bound"),
    Constant("Q4_0 weight sizes", None, "GB", "assumption",
             "approximate GGUF Q4_0 file sizes: Llama-3.2-1B 0.77, 3B 1.92, Llama-3.1-8B 4.66"),
    Constant("SoC power while generating", _LAPTOP_POWER_W, "W", "assumption",
             "assumed package power of a fanless M2-class laptop SoC under GPU load; not from "
             "a measurement table"),
    Constant("Wi-Fi round-trip time", 0.020, "s", "assumption",
             "home Wi-Fi plus broadband to a cloud region"),
    Constant("Wi-Fi uplink", 20e6, "bit/s", "assumption", "typical broadband uplink"),
    Constant("Wi-Fi downlink", 100e6, "bit/s", "assumption", "typical broadband downlink"),
    Constant("Wi-Fi alpha_u", _WIFI["alpha_up"], "mW per Mbit/s", "measured",
             HUANG_2012 + ", Wi-Fi power model of a phone (transcribed); applying a phone's "
             "Wi-Fi radio to a laptop is an assumption"),
    Constant("Wi-Fi alpha_d", _WIFI["alpha_down"], "mW per Mbit/s", "measured",
             HUANG_2012 + ", Wi-Fi power model (transcribed)"),
    Constant("Wi-Fi beta (connected power)", _WIFI["beta"], "mW", "measured",
             HUANG_2012 + ", Wi-Fi power model (transcribed)"),
    Constant("Wi-Fi promotion and tail", 0.0, "J", "assumption",
             "Wi-Fi has no multi-second high-power tail like LTE's (Huang et al.); set to 0"),
)

_PAYLOAD_CONSTANTS = (
    Constant("bytes per token", 4.0, "B", "assumption",
             "about 4 characters of English text per token (OpenAI's rule of thumb for its "
             "tokenizers; Llama 3's is similar), UTF-8"),
    Constant("request overhead", 700.0, "B", "assumption",
             "JSON envelope, HTTP/2 headers and TLS records of one chat-completion request"),
    Constant("response overhead", 500.0, "B", "assumption",
             "JSON envelope and headers of one non-streamed response"),
)


def _phone() -> Device:
    link = Link(
        name="LTE", rtt_s=0.070, uplink_bps=6e6, downlink_bps=13e6,
        radio_power_w=_LTE["beta"] / 1e3,
        energy_j_per_byte_up=_mw_per_mbps_to_j_per_byte(_LTE["alpha_up"]),
        energy_j_per_byte_down=_mw_per_mbps_to_j_per_byte(_LTE["alpha_down"]),
        energy_j_per_offload=(_LTE["promo_s"] * _LTE["promo_mw"]
                              + _LTE["tail_s"] * _LTE["tail_mw"]) / 1e3,
        source=HUANG_2012)
    models = {m: _device_model(m, _PHONE_POWER_W, pp, tg, META_L32)
              for m, (pp, tg) in _PHONE_SPEEDS.items()}
    return Device(
        name="phone", description="phone-class: Snapdragon 8 Gen 3 (OnePlus 12), 4-bit "
        "Llama 3.2 on the CPU via ExecuTorch, LTE to the cloud",
        link=link, models=models, bytes_per_token=4.0, request_overhead_bytes=700.0,
        response_overhead_bytes=500.0, constants=_PHONE_CONSTANTS + _PAYLOAD_CONSTANTS)


def _laptop() -> Device:
    link = Link(
        name="Wi-Fi", rtt_s=0.020, uplink_bps=20e6, downlink_bps=100e6,
        radio_power_w=_WIFI["beta"] / 1e3,
        energy_j_per_byte_up=_mw_per_mbps_to_j_per_byte(_WIFI["alpha_up"]),
        energy_j_per_byte_down=_mw_per_mbps_to_j_per_byte(_WIFI["alpha_down"]),
        energy_j_per_offload=0.0, source=HUANG_2012)
    models = {m: _device_model(m, _LAPTOP_POWER_W, _REF_PP * _REF_PARAMS_B / params,
                               _REF_TG * _REF_BYTES_GB / size_gb, LLAMACPP_M)
              for m, (params, size_gb) in _LAPTOP_SIZES.items()}
    return Device(
        name="laptop", description="laptop-class: Apple M2-class (100 GB/s unified memory), "
        "4-bit Llama via llama.cpp on the GPU, Wi-Fi to the cloud",
        link=link, models=models, bytes_per_token=4.0, request_overhead_bytes=700.0,
        response_overhead_bytes=500.0, constants=_LAPTOP_CONSTANTS + _PAYLOAD_CONSTANTS)


PHONE = _phone()
LAPTOP = _laptop()


def _check_device(name: str, obj: object) -> Device:
    if not isinstance(obj, Device):
        raise ConfigError(f"device profile {name!r} is {obj!r}, not a Device")
    return obj


#: Device profiles by name (a read-only mapping; plugins: ``routecast.devices``).
DEVICES: Registry[Device] = Registry("device profile", "routecast.devices",
                                     {"phone": f"{__name__}:PHONE",
                                      "laptop": f"{__name__}:LAPTOP"}, _check_device)

#: List prices of the cloud models of the cascade data, for callers without recorded costs.
CLOUD_PROFILES: dict[str, Profile] = {
    "gpt-4o": Profile(model="gpt-4o", placement="cloud", usd_per_input_token=2.5e-6,
                      usd_per_output_token=10e-6,
                      source="OpenAI API pricing, gpt-4o (2024-08-06): $2.50 / $10 per M tokens"),
    "llama3.1-405b": Profile(model="llama3.1-405b", placement="cloud",
                             usd_per_input_token=3e-6, usd_per_output_token=3e-6,
                             source="Fireworks AI serverless price for Llama 3.1 405B: "
                                    "$3 per M tokens in and out"),
}


def get_device(name: str) -> Device:
    """A device profile by name; a :class:`ConfigError` names the ones there are."""
    return DEVICES.load(name)
