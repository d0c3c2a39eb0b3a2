"""The device-first HI simulation: hand-checked on a tiny dataset, recomputed independently
from the raw CSV of the real cascade data, and end to end through ``routecast hi``."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from routecast.cli import cli, main
from routecast.data import load_dataset
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError, DataError
from routecast.hi import simulation as hi
from routecast.hi.profile import PHONE, Device, Link, Profile

FOLDER = "llm-cascades-zellinger"
DEVICE_MODEL, CLOUD_MODEL = "llama3.2-3b", "gpt-4o"


def _tiny(confidence: bool = True, cloud_latency: float = 1.0) -> Dataset:
    """Four prompts; column 0 is the device model ``small``, column 1 the cloud ``big``."""
    return Dataset(
        name="tiny", models=("small", "big"), ids=("a", "b", "c", "d"),
        prompts=("p1", "p2", "p3", "p4"),
        quality=np.array([[0, 1], [1, 1], [1, 0], [0, 1]], dtype=float),
        cost_usd=np.array([[1e-4, 0.01], [1e-4, 0.02], [1e-4, 0.03], [1e-4, 0.04]]),
        split=np.array(["train"] * 4),
        latency_s=np.array([[9.0, cloud_latency], [9.0, 2.0], [9.0, 3.0], [9.0, 4.0]]),
        tokens_in=np.array([[10, 12], [20, 22], [30, 32], [40, 42]], dtype=float),
        tokens_out=np.array([[5, 6], [1, 2], [2, 3], [10, 11]], dtype=float),
        confidence=np.array([[0.2, 0.9], [0.6, 0.9], [0.9, 0.9], [0.4, 0.9]])
        if confidence else None,
    )


TINY_DEVICE = Device(
    name="test-device", description="hand numbers",
    link=Link("test-link", rtt_s=0.2, uplink_bps=8000.0, downlink_bps=8000.0,
              radio_power_w=1.0, energy_j_per_byte_up=0.001, energy_j_per_byte_down=0.002,
              energy_j_per_offload=3.0),
    models={"small": Profile("small", "device", ttft_s=0.5, s_per_input_token=0.01,
                             s_per_output_token=0.1, energy_j_per_input_token=0.02,
                             energy_j_per_output_token=0.5)},
    bytes_per_token=10.0, request_overhead_bytes=100.0, response_overhead_bytes=50.0,
)


# -- hand-checked on the tiny dataset -------------------------------------------------------

# Worked by hand from the module docstring's definitions, per prompt a..d:
DEVICE_LATENCY = [1.1, 0.8, 1.0, 1.9]        # 0.5 + 0.01 * tokens_in + 0.1 * tokens_out
DEVICE_ENERGY = [2.7, 0.9, 1.6, 5.8]         # 0.02 * tokens_in + 0.5 * tokens_out
NETWORK = [0.53, 0.59, 0.70, 0.88]           # 0.2 + (100 + 10 t_in) / 1000 + (50 + 10 t_out) / 1000
RADIO = [4.97, 6.05, 7.28, 8.72]             # (network + cloud latency) + bytes + 3 J


def test_prepare_computes_the_per_query_figures() -> None:
    inputs = hi.prepare(_tiny(), "small", "big", TINY_DEVICE)
    assert inputs.device_latency_s == pytest.approx(DEVICE_LATENCY)
    assert inputs.device_energy_j == pytest.approx(DEVICE_ENERGY)
    assert inputs.network_s == pytest.approx(NETWORK)
    assert inputs.radio_energy_j == pytest.approx(RADIO)


def test_threshold_policy_offloads_low_confidence_and_pays_for_it() -> None:
    inputs = hi.prepare(_tiny(), "small", "big", TINY_DEVICE)
    out = hi.run_threshold(inputs, 0.5)  # offloads a (0.2) and d (0.4)
    assert out.offloaded.tolist() == [True, False, False, True]
    assert out.quality.tolist() == [1.0, 1.0, 1.0, 1.0]  # cloud fixes a and d; b, c were right
    assert out.latency_s == pytest.approx([1.1 + 0.53 + 1.0, 0.8, 1.0, 1.9 + 0.88 + 4.0])
    assert out.energy_j == pytest.approx([2.7 + 4.97, 0.9, 1.6, 5.8 + 8.72])
    assert out.cost_usd == pytest.approx([0.01, 0.0, 0.0, 0.04])


def test_baselines() -> None:
    inputs = hi.prepare(_tiny(), "small", "big", TINY_DEVICE)
    dev, cloud = hi.device_only(inputs), hi.cloud_only(inputs)
    assert not dev.offloaded.any() and dev.cost_usd.sum() == 0
    assert dev.quality.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert cloud.offloaded.all()
    assert cloud.latency_s == pytest.approx(np.add(NETWORK, [1.0, 2.0, 3.0, 4.0]))
    assert cloud.energy_j == pytest.approx(RADIO)  # no device attempt, only the radio
    # Above every confidence, HI offloads everything but still pays the device attempt.
    everything = hi.run_threshold(inputs, 1.01)
    assert everything.quality.tolist() == cloud.quality.tolist()
    assert everything.latency_s == pytest.approx(cloud.latency_s + DEVICE_LATENCY)


def test_summary_and_ies_match_a_hand_computation() -> None:
    inputs = hi.prepare(_tiny(), "small", "big", TINY_DEVICE)
    cfg = hi.IESConfig(alpha=0.5, latency_target_s=1.0, energy_weight=0.5)
    row = hi.summarize(hi.run_threshold(inputs, 0.5), hi.References.of(inputs), cfg)
    latency = [2.63, 0.8, 1.0, 6.78]
    energy = [7.67, 0.9, 1.6, 14.52]
    assert row["accuracy"] == 1.0 and row["offload_share"] == 0.5
    assert row["energy_j"] == pytest.approx(sum(energy) / 4)
    assert row["cost_usd"] == pytest.approx(0.0125)
    ordered = sorted(latency)
    assert row["latency_p50_s"] == pytest.approx((ordered[1] + ordered[2]) / 2)  # middle two
    # 99th percentile, linear between the top two: rank 0.99 * 3 = 2.97.
    assert row["latency_p99_s"] == pytest.approx(ordered[2] + 0.97 * (ordered[3] - ordered[2]))
    resp = (1 / 2.63 + 1 + 1 + 1 / 6.78) / 4
    assert row["responsiveness"] == pytest.approx(resp)
    e_ref = max(sum(DEVICE_ENERGY), sum(RADIO)) / 4  # device only vs cloud only
    cost = 0.5 * (sum(energy) / 4) / e_ref + 0.5 * 0.0125 / 0.025
    assert row["composite_cost"] == pytest.approx(cost)
    assert row["ies"] == pytest.approx((0.5 * 1.0 + 0.5 * resp) / cost)


def test_ies_weights_move_the_score_the_right_way() -> None:
    inputs = hi.prepare(_tiny(), "small", "big", TINY_DEVICE)
    refs = hi.References.of(inputs)
    dev = hi.device_only(inputs)
    # Device only spends no dollars: weighting dollars more makes it look cheaper.
    by_energy = hi.summarize(dev, refs, hi.IESConfig(energy_weight=0.9))["ies"]
    by_dollars = hi.summarize(dev, refs, hi.IESConfig(energy_weight=0.1))["ies"]
    assert by_dollars > by_energy
    assert hi.ies(0.8, 0.4, 0.0, 0.5) == math.inf


def test_sweep_grid_is_increasing_and_ends_offloading_everything() -> None:
    inputs = hi.prepare(_tiny(), "small", "big", TINY_DEVICE)
    grid = hi.threshold_grid(inputs.confidence, 5)
    assert np.all(np.diff(grid) > 0) and grid[0] > 0 and grid[-1] > 1
    rows = hi.table(inputs, grid.tolist())
    assert [r["name"] for r in rows[:2]] == ["device only", "cloud only"]
    shares = [r["offload_share"] for r in rows[2:]]
    assert shares == sorted(shares) and shares[-1] == 1.0


def test_missing_outcome_arrays_are_reported_with_a_fix() -> None:
    with pytest.raises(DataError, match=r"records no confidence.*Fix: use outcomes"):
        hi.prepare(_tiny(confidence=False), "small", "big", TINY_DEVICE)
    with pytest.raises(DataError, match=r"latency_s is missing for 1 prompts.*'a'"):
        hi.prepare(_tiny(cloud_latency=float("nan")), "small", "big", TINY_DEVICE)


def test_bad_choices_are_config_errors() -> None:
    data = _tiny()
    with pytest.raises(ConfigError, match="both 'small'"):
        hi.prepare(data, "small", "small", TINY_DEVICE)
    with pytest.raises(ConfigError, match="unknown model 'huge'"):
        hi.prepare(data, "small", "huge", TINY_DEVICE)
    with pytest.raises(ConfigError, match="no figures for 'big'"):
        hi.prepare(data, "big", "small", TINY_DEVICE)
    with pytest.raises(ConfigError, match="finite"):
        hi.run_threshold(hi.prepare(data, "small", "big", TINY_DEVICE), float("nan"))
    with pytest.raises(ConfigError, match="alpha"):
        hi.IESConfig(alpha=1.5)


# -- the real cascade data, recomputed from its raw CSV --------------------------------------

@pytest.fixture(scope="module")
def flat(shared_data: Path) -> dict[str, dict[str, list[float]]]:
    """Per model, in prompt order: correct, cost, confidence, tokens in/out, from the CSV."""
    out: dict[str, dict[str, list[float]]] = {}
    with gzip.open(shared_data / FOLDER / "flat_outcomes_train.csv.gz", "rt",
                   encoding="utf-8", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: (r["dataset"], int(r["query_idx"])))
    for r in rows:
        m = out.setdefault(r["model"], {k: [] for k in ("q", "usd", "conf", "tin", "tout")})
        m["q"].append(1.0 if r["correct"] == "True" else 0.0)
        m["usd"].append(float(r["cost_usd"]))
        m["conf"].append(math.exp(float(r["raw_confidence"])))  # exp(-inf) = 0
        m["tin"].append(float(r["tokens_in"]))
        m["tout"].append(float(r["tokens_out"]))
    return out


@pytest.fixture(scope="module")
def cli_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("hi") / "hi.json"
    result = CliRunner().invoke(cli, [
        "hi", str(shared_data / FOLDER), "--device-model", DEVICE_MODEL,
        "--cloud-model", CLOUD_MODEL, "--threshold", "0.6", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "phone" in result.output and "laptop" in result.output
    parsed: dict[str, Any] = json.loads(out.read_text())
    return parsed


def test_cli_figures_match_the_raw_csv(cli_run: dict[str, Any],
                                       flat: dict[str, dict[str, list[float]]]) -> None:
    dev, cloud = flat[DEVICE_MODEL], flat[CLOUD_MODEL]
    q_dev, q_cloud = np.array(dev["q"]), np.array(cloud["q"])
    off = np.array(dev["conf"]) < 0.6
    assert cli_run["n_prompts"] == len(q_dev) == 1485
    for name in ("phone", "laptop"):
        rows = {r["name"]: r for r in cli_run["profiles"][name]["rows"]}
        assert rows["device only"]["accuracy"] == pytest.approx(q_dev.mean())
        assert rows["cloud only"]["accuracy"] == pytest.approx(q_cloud.mean())
        assert rows["cloud only"]["cost_usd"] == pytest.approx(np.mean(cloud["usd"]))
        hi_row = rows["HI theta=0.6"]
        assert hi_row["offload_share"] == pytest.approx(off.mean())
        assert hi_row["accuracy"] == pytest.approx(np.where(off, q_cloud, q_dev).mean())
        assert hi_row["cost_usd"] == pytest.approx(np.where(off, cloud["usd"], 0.0).mean())
    # Phone energy from the model card's speeds and the stated 5 W, by hand.
    expected_j = np.mean(np.array(dev["tin"]) * 5 / 89.7 + np.array(dev["tout"]) * 5 / 19.7)
    phone = {r["name"]: r for r in cli_run["profiles"]["phone"]["rows"]}
    assert phone["device only"]["energy_j"] == pytest.approx(expected_j)


def test_radio_energy_makes_lte_offloads_dearer_than_wifi(cli_run: dict[str, Any]) -> None:
    phone = {r["name"]: r for r in cli_run["profiles"]["phone"]["rows"]}
    laptop = {r["name"]: r for r in cli_run["profiles"]["laptop"]["rows"]}
    # Cloud only: the device spends only radio energy; LTE's tail dwarfs Wi-Fi's cost.
    assert phone["cloud only"]["energy_j"] > 10 * laptop["cloud only"]["energy_j"]
    # Offloading adds radio energy on top of the local attempt.
    for rows in (phone, laptop):
        assert rows["HI theta=0.6"]["energy_j"] > rows["device only"]["energy_j"]


def test_real_data_offload_share_and_spend_grow_with_the_threshold(shared_data: Path) -> None:
    data = load_dataset(shared_data / FOLDER)
    inputs = hi.prepare(data, DEVICE_MODEL, CLOUD_MODEL, PHONE)
    rows = hi.table(inputs, [0.2, 0.4, 0.6, 0.8, 1.01])[2:]
    for a, b in itertools.pairwise(rows):
        assert b["offload_share"] >= a["offload_share"]
        assert b["cost_usd"] >= a["cost_usd"]
        assert b["energy_j"] >= a["energy_j"]


def test_cli_sweep_with_bandit_writes_json_and_plot(shared_data: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    result = CliRunner().invoke(cli, [
        "hi", str(shared_data / FOLDER), "--device-model", DEVICE_MODEL, "--cloud-model",
        CLOUD_MODEL, "--profiles", "phone", "--sweep", "--points", "5", "--bandit",
        "--seeds", "2", "--horizon", "300", "--json", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())
    rows = res["profiles"]["phone"]["rows"]
    thresholds = [r["threshold"] for r in rows[2:]]
    assert thresholds == sorted(thresholds) and len(thresholds) >= 3
    settings = res["bandit"]["settings"]
    assert set(settings) == {"iid", "mix shift at T/2"}
    for s in settings.values():
        assert s["horizon"] == 300 and len(s["final_thresholds"]) == 2
        assert all(math.isfinite(s["regret_at"][k]["mean"]) for k in ("T/4", "T/2", "T"))
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_threshold_with_sweep(shared_data: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["hi", str(shared_data / FOLDER), "--device-model", DEVICE_MODEL,
              "--cloud-model", CLOUD_MODEL, "--threshold", "0.5", "--sweep"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "either --threshold or --sweep" in err and "Traceback" not in err
