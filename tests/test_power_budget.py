"""The host plays the phone in the power handshake: its budget, a withdrawal, a refused grant.

On the real firmware in the simulator, through the Camera API and `magcam monitor --budget`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import magcam
from magcam.sim import Simulator

MAGCAM = [sys.executable, "-m", "magcam.cli"]


def of(events, kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def test_a_load_above_a_small_grant_is_cut_as_over_budget(tmp_path):
    scenario = tmp_path / "load.jsonl"
    scenario.write_text('{"t": 200, "do": "load", "ma": 600}\n')  # ~2.9 W at the rail
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port, power_budget_mw=2500) as cam:
        assert cam.power_budget_mw == 2500
        events = list(cam.events(duration=1.5))
    granted = [e for e in of(events, "power") if e["state"] in ("granted", "on")]
    assert granted and {e["budget_mw"] for e in granted} == {2500}  # min(request 5000, the phone's 2500)
    fault = of(events, "fault")[0]
    assert fault["cause"] == "over_budget" and fault["value"] > 2500


def test_withdrawing_the_power_holds_the_rail_off_until_granted_again(tmp_path):
    with Simulator() as sim, magcam.connect(sim.port) as cam:
        assert cam.link.wait_state("power", lambda e: e["state"] == "on", 3.0)
        cam.clear_events()
        assert cam.grant_power(0) == 0  # a phone that stops its reverse charging
        held = of(cam.events(duration=1.2), "power")
        assert held and {e["state"] for e in held} == {"requesting"}  # nothing granted it again
        assert cam.power_budget_mw == 0

        assert cam.grant_power(1500) == 0  # below the module's min_grant_mw: refused
        refused = list(cam.events(duration=1.2))
        assert {e["state"] for e in of(refused, "power")} == {"requesting"}
        assert [e for e in of(refused, "link") if e.get("state") == "grant_refused"] == []  # the caller knows

        assert cam.grant_power(3000) == 3000
        on = cam.link.wait_state("power", lambda e: e["state"] == "on", 3.0)
        assert on is not None and on["budget_mw"] == 3000


def test_a_refused_budget_is_not_offered_again_at_every_request():
    with Simulator() as sim, magcam.connect(sim.port, power_budget_mw=1500) as cam:
        assert cam.link.wait_state("link", lambda e: e.get("state") == "grant_refused", 3.0)
        sent = cam.link.stats()["frames_out"]
        requests = of(cam.events(duration=3.0), "power")
        sent = cam.link.stats()["frames_out"] - sent
    # the rail asks every 500 ms; the host only keeps the session alive (a ping a second when idle)
    assert len(requests) >= 5 and {e["state"] for e in requests} == {"requesting"}
    assert sent <= 4, f"{sent} frames sent in 3 s"


def run_monitor(budget: str, seconds: float = 2.0) -> subprocess.CompletedProcess:
    with Simulator() as sim:
        return subprocess.run([*MAGCAM, "monitor", "--port", sim.port, "--json", "--duration", str(seconds),
                               "--budget", budget], capture_output=True, text=True, timeout=60)


def test_monitor_budget_below_the_minimum_is_refused_and_said_once():
    mon = run_monitor("1500")
    assert mon.returncode == 0, mon.stderr
    events = [json.loads(line) for line in mon.stdout.splitlines()]
    assert {e["state"] for e in of(events, "power")} == {"requesting"}
    refused = [e for e in of(events, "link") if e.get("state") == "grant_refused"]
    assert len(refused) == 1 and refused[0]["offered_mw"] == 1500  # not again at every request
    assert "1500 mW" in refused[0]["reason"] and "min_grant_mw (2000 mW)" in refused[0]["reason"]


def test_the_refusal_names_the_minimum_of_the_module_s_descriptor(tmp_path, descriptor):
    mine = dict(descriptor, power=dict(descriptor.get("power") or {}, min_grant_mw=3000))
    (tmp_path / "descriptor.json").write_text(json.dumps(mine))
    with Simulator(descriptor=tmp_path / "descriptor.json") as sim, \
            magcam.connect(sim.port, power_budget_mw=2500) as cam:
        refused = cam.link.wait_state("link", lambda e: e.get("state") == "grant_refused", 3.0)
    assert refused is not None and "min_grant_mw (3000 mW)" in refused["reason"]


def test_monitor_budget_zero_grants_nothing():
    mon = run_monitor("0", seconds=1.5)
    assert mon.returncode == 0, mon.stderr
    events = [json.loads(line) for line in mon.stdout.splitlines()]
    assert {e["state"] for e in of(events, "power")} == {"requesting"}
    assert [e for e in of(events, "link") if e.get("state") == "grant_refused"] == []


@pytest.mark.parametrize("budget", ["-1", "65536", "lots"])
def test_monitor_budget_out_of_range_is_a_usage_error(budget):
    out = subprocess.run([*MAGCAM, "monitor", "--port", "/nonexistent", "--budget", budget],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Invalid value for '--budget'" in out.stderr


@pytest.mark.parametrize("budget", [-1, 65536, 2.5, "4500", True])
def test_a_bad_budget_is_refused_before_any_port_is_opened(budget):
    with pytest.raises(ValueError, match="power budget"):
        magcam.Camera("/nonexistent", power_budget_mw=budget)

