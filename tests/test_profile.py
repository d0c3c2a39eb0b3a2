"""Profiles, links and the built-in phone/laptop devices, checked against their sources."""

from __future__ import annotations

import numpy as np
import pytest

from routecast.errors import ConfigError
from routecast.hi.profile import (
    CLOUD_PROFILES,
    DEVICES,
    LAPTOP,
    PHONE,
    Device,
    Link,
    Profile,
    get_device,
)


def test_profile_formulas_on_hand_numbers() -> None:
    p = Profile("m", "device", ttft_s=0.1, s_per_input_token=0.01, s_per_output_token=0.05,
                energy_j_per_input_token=0.2, energy_j_per_output_token=1.5)
    t_in, t_out = np.array([100.0, 0.0]), np.array([10.0, 4.0])
    assert p.latency_s(t_in, t_out) == pytest.approx([0.1 + 1.0 + 0.5, 0.1 + 0.2])
    assert p.energy_j(t_in, t_out) == pytest.approx([20.0 + 15.0, 6.0])
    cloud = Profile("c", "cloud", usd_per_input_token=1e-6, usd_per_output_token=4e-6)
    assert cloud.cost_usd(t_in, t_out) == pytest.approx([100e-6 + 40e-6, 16e-6])
    assert cloud.energy_j(t_in, t_out) == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize("kwargs", [
    {"placement": "moon"},
    {"placement": "device", "s_per_output_token": -0.1},
    {"placement": "device", "ttft_s": float("nan")},
    {"placement": "cloud", "energy_j_per_output_token": 0.3},  # not the device's energy
])
def test_profile_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="profile 'm'"):
        Profile("m", **kwargs)  # type: ignore[arg-type]


def test_link_time_and_energy_on_hand_numbers() -> None:
    link = Link("test", rtt_s=0.1, uplink_bps=8000.0, downlink_bps=16000.0, radio_power_w=2.0,
                energy_j_per_byte_up=0.01, energy_j_per_byte_down=0.001,
                energy_j_per_offload=3.0)
    # 500 bytes up at 1000 B/s and 1000 bytes down at 2000 B/s: 0.5 s each, plus the RTT.
    assert float(link.transfer_s(np.array(500.0), np.array(1000.0))) == pytest.approx(1.1)
    e = float(link.energy_j(np.array(500.0), np.array(1000.0), np.array(4.0)))
    assert e == pytest.approx(2.0 * 4.0 + 5.0 + 1.0 + 3.0)


def test_link_rejects_zero_bandwidth() -> None:
    with pytest.raises(ConfigError, match="uplink_bps"):
        Link("x", rtt_s=0.0, uplink_bps=0.0, downlink_bps=1.0, radio_power_w=0.0,
             energy_j_per_byte_up=0.0, energy_j_per_byte_down=0.0)


def test_lte_byte_energy_matches_the_power_model_at_any_rate() -> None:
    """Huang et al.'s LTE model: sending at r Mbit/s draws alpha_u * r mW above the base
    power. Energy for 1 MB at 6 and at 20 Mbit/s must both equal the per-byte figure."""
    alpha_u, alpha_d = 438.39e-3, 51.97e-3  # W per Mbit/s
    for rate in (6.0, 20.0):
        seconds = 8.0 / rate  # 1e6 bytes
        assert alpha_u * rate * seconds / 1e6 == pytest.approx(
            PHONE.link.energy_j_per_byte_up)
        assert alpha_d * rate * seconds / 1e6 == pytest.approx(
            PHONE.link.energy_j_per_byte_down)
    # Promotion (260.1 ms at 1210.7 mW) plus the tail (11.576 s at 1060.04 mW).
    assert PHONE.link.energy_j_per_offload == pytest.approx(
        0.2601 * 1.2107 + 11.576 * 1.06004)
    assert PHONE.link.radio_power_w == pytest.approx(1.28804)


def test_phone_speeds_reproduce_the_model_cards_time_to_first_token() -> None:
    """The card measures TTFT for a 64-token prompt separately from prefill speed: 0.3 s
    (1B) and 0.7 s (3B), rounded to 0.1 s. Our prefill-derived latency must agree."""
    for model, ttft in (("llama3.2-1b", 0.3), ("llama3.2-3b", 0.7)):
        got = float(PHONE.profile(model).latency_s(np.array(64.0), np.array(0.0)))
        assert got == pytest.approx(ttft, abs=0.06)
    # Decode: 19.7 tok/s for the 3B model, i.e. 100 tokens take 100 / 19.7 s.
    three_b = PHONE.profile("llama3.2-3b")
    assert float(three_b.latency_s(np.array(0.0), np.array(100.0))) == pytest.approx(100 / 19.7)


@pytest.mark.parametrize("device", [PHONE, LAPTOP], ids=lambda d: d.name)
def test_energy_per_token_is_power_over_speed(device: Device) -> None:
    power = {c.name: c.value for c in device.constants}["SoC power while generating"]
    assert power is not None
    for prof in device.models.values():
        assert prof.energy_j_per_output_token == pytest.approx(power * prof.s_per_output_token)
        assert prof.energy_j_per_input_token == pytest.approx(power * prof.s_per_input_token)
        # Prefill processes tokens in parallel: cheaper per token than decoding.
        assert prof.s_per_input_token < prof.s_per_output_token


def test_laptop_decodes_faster_than_the_phone_and_bigger_models_are_slower() -> None:
    for model in set(PHONE.models) & set(LAPTOP.models):
        assert LAPTOP.profile(model).s_per_output_token < PHONE.profile(model).s_per_output_token
    sizes = ["llama3.2-1b", "llama3.2-3b", "llama3.1-8b"]
    per_token = [LAPTOP.profile(m).s_per_output_token for m in sizes]
    assert per_token == sorted(per_token) and len(set(per_token)) == 3


@pytest.mark.parametrize("device", list(DEVICES.values()), ids=lambda d: d.name)
def test_every_constant_has_a_source_and_assumptions_say_so(device: Device) -> None:
    assert device.constants
    for c in device.constants:
        assert c.source.strip() and c.unit.strip()
        assert c.basis in ("measured", "derived", "assumption")
    by_name = {c.name: c for c in device.constants}
    # The power draw is not a measured figure here; it must not pretend to be.
    assert by_name["SoC power while generating"].basis == "assumption"
    assert by_name["bytes per token"].basis == "assumption"


def test_cloud_profiles_are_priced_and_placed_in_the_cloud() -> None:
    for name, prof in CLOUD_PROFILES.items():
        assert prof.model == name and prof.placement == "cloud"
        assert prof.usd_per_input_token > 0 and prof.usd_per_output_token > 0
        assert prof.source


def test_lookups_name_what_exists() -> None:
    assert get_device("phone") is PHONE
    with pytest.raises(ConfigError, match=r"unknown device profile 'watch'.*phone, laptop"):
        get_device("watch")
    with pytest.raises(ConfigError, match=r"no figures for 'gpt-4o'.*llama3\.2-1b, llama3\.2-3b"):
        PHONE.profile("gpt-4o")


def test_device_rejects_a_cloud_profile_among_its_models() -> None:
    cloud = Profile("big", "cloud")
    with pytest.raises(ConfigError, match="must be a 'device' profile"):
        Device("d", "x", PHONE.link, {"big": cloud})
