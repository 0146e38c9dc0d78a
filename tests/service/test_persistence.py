"""Memory store persistence: shutdown and periodic snapshots, restore at start, damaged files refused."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from service import snapshot
from service.state import AgentState
from tests.service.conftest import MakeClient
from tests.service.helpers import metric
from tests.support import Replay


def _stream(client, replay: Replay, frames: range, route: str = "/v1/ab/predict") -> dict:
    r = None
    for i in frames:
        r = client.post(route, json=replay.body(i))
        assert r.status_code == 200, r.text
    assert r is not None
    return r.json()


def _trajectories(answer: dict, role: str = "ipnet") -> dict[str, np.ndarray]:
    preds = answer["predictions"][role] if isinstance(answer["predictions"], dict) else answer["predictions"]
    return {p["agent_id"]: np.array([[q["x"], q["y"]] for q in p["trajectory"]]) for p in preds}


def test_graceful_restart_gives_the_same_next_prediction(
    make_client: MakeClient, replay: Replay, tmp_path: Path
):
    snap = tmp_path / "state.snap"
    reference = make_client()
    first = make_client(snapshot_path=snap)
    _stream(reference, replay, range(20))
    _stream(first, replay, range(20))
    first.__exit__(None, None, None)  # lifespan exit: the shutdown snapshot
    assert snap.is_file()
    entries = snapshot.read(snap)
    assert entries is not None and {m for m, _, _ in entries} == {"ipnet", "gru"}

    restarted = make_client(snapshot_path=snap)
    assert (
        restarted.get("/readyz").json()["snapshot"].startswith(f"restored {len(entries)} of {len(entries)}")
    )
    want = _stream(reference, replay, range(20, 21))
    got = _stream(restarted, replay, range(20, 21))
    for role in ("ipnet", "baseline"):
        w, g = _trajectories(want, role), _trajectories(got, role)
        assert w.keys() == g.keys()
        for agent in w:
            np.testing.assert_allclose(g[agent], w[agent], rtol=0, atol=1e-9)
    assert [p["steps"] for p in got["predictions"]["ipnet"]] == [
        p["steps"] for p in want["predictions"]["ipnet"]
    ]
    assert not any(p["new_track"] for p in got["predictions"]["ipnet"] if p["steps"] > 1)


def test_periodic_snapshot_bounds_what_a_crash_loses(make_client: MakeClient, replay: Replay, tmp_path: Path):
    snap = tmp_path / "state.snap"
    live = make_client(snapshot_path=snap, snapshot_interval_s=0.2)
    _stream(live, replay, range(5), route="/v1/predict")
    # two more writes: the second one started after the last frame was applied
    target = metric(live, "trajpred_snapshots_total", event="written") + 2
    deadline = time.monotonic() + 20
    while metric(live, "trajpred_snapshots_total", event="written") < target and time.monotonic() < deadline:
        time.sleep(0.05)
    crashed = tmp_path / "copy.snap"
    shutil.copy(snap, crashed)  # what a kill -9 would leave: the last periodic snapshot
    after_crash = make_client(snapshot_path=crashed)
    agent = replay.body(4)["observations"][0]["agent_id"]
    state = after_crash.get(f"/v1/agents/{agent}").json()["models"]["ipnet"]
    assert state["last_timestamp"] == replay.times[4] and state["steps"] == 5


def test_damaged_snapshot_is_reported_and_not_loaded(make_client: MakeClient, replay: Replay, tmp_path: Path):
    snap = tmp_path / "state.snap"
    c = make_client(snapshot_path=snap)
    _stream(c, replay, range(3), route="/v1/predict")
    c.__exit__(None, None, None)
    good = snap.read_bytes()
    agent = replay.body(0)["observations"][0]["agent_id"]
    for damage in ("flip", "torn"):
        data = bytearray(good)
        if damage == "flip":
            data[len(data) // 2] ^= 0x01
        else:
            data = data[: len(data) * 2 // 3]
        snap.write_bytes(bytes(data))
        d = make_client(snapshot_path=snap)
        assert d.get("/readyz").json()["snapshot"].startswith("corrupt")
        assert metric(d, "trajpred_snapshots_total", event="corrupt") == 1
        assert d.get(f"/v1/agents/{agent}").status_code == 404
        assert not snap.exists() and any(p.name.startswith("state.snap.corrupt-") for p in tmp_path.iterdir())
        d.__exit__(None, None, None)
        assert snapshot.read(snap) is not None  # the next shutdown writes a sound file again


def test_snapshot_codec_detects_any_single_byte_change():
    rec = AgentState(np.arange(7.0), np.full(4, 301.5, np.float32), 12.5, 10.0, 1, 42, 7, 1.7e9).to_bytes()
    data = snapshot.encode([("ipnet", "veh-1", rec), ("gru", "veh/ü", rec)])
    assert snapshot.decode(data) == [("ipnet", "veh-1", rec), ("gru", "veh/ü", rec)]
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(data), 40, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 0x80
        try:
            snapshot.decode(bytes(bad))
        except snapshot.SnapshotError:
            continue
        raise AssertionError(f"a change at byte {pos} went unnoticed")
    for cut in (0, 10, len(data) - 1):
        try:
            snapshot.decode(data[:cut])
        except snapshot.SnapshotError:
            continue
        raise AssertionError(f"a file torn at {cut} bytes was accepted")


def test_state_record_round_trip_is_compact_plain_data():
    st = AgentState(
        np.array([1.5, -2.0, 0.3, 0.1, 1.0, 0.0, 17.0]),
        np.linspace(300, 320, 64, dtype=np.float32),
        1718000000.1,
        1717999998.0,
        0,
        123456,
        99,
        1.75e9,
    )
    data = st.to_bytes()
    assert len(data) == 48 + 7 * 8 + 64 * 4
    back = AgentState.from_bytes(data)
    np.testing.assert_array_equal(back.kin, st.kin)
    np.testing.assert_array_equal(back.memory, st.memory)
    assert (
        back.last_t,
        back.track_start_t,
        back.agent_type,
        back.tag,
        back.version,
        back.updated_wall,
        back.steps,
    ) == (st.last_t, st.track_start_t, 0, 123456, 99, 1.75e9, 17)


def test_a_planted_symlink_cannot_redirect_the_snapshot_write(tmp_path: Path):
    """Symlinks under the names a writer could predict (the old ``.<name>.<pid>.tmp`` included) point at a
    victim file: the snapshot is written, the victim is untouched, no temporary file is left."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "state.snap"
    for name in (f".{target.name}.{os.getpid()}.tmp", f".{target.name}.tmp"):
        (tmp_path / name).symlink_to(victim)
    snapshot.write_atomic(target, snapshot.encode([("ipnet", "a", b"record")]))
    assert victim.read_text() == "keep me"
    assert snapshot.read(target) == [("ipnet", "a", b"record")]
    assert not target.is_symlink()
    leftovers = {p.name for p in tmp_path.iterdir()} - {"victim.txt", "state.snap"}
    assert all((tmp_path / n).is_symlink() for n in leftovers)  # only the planted links remain
