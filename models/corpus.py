"""Named training corpora built from ``../shared/data`` (read in place, never copied).

- ``shipped``: the weights in ``models/weights``: KITTI tracking (Karlsruhe, human labels), the Lyft L5
  scene (Palo Alto, tracker output) and all of ETH/UCY (pedestrians, 2.5 Hz). Argoverse 2 (Pittsburgh,
  Miami, Austin) is held out entirely: it is the vehicle test set, from other cities and another sensor rig.
- ``10hz``: KITTI and Lyft only, both sampled at 10 Hz. Models trained on it have never seen another
  rate: the corpus for measuring generalisation to unseen rates (5 Hz, 2 Hz); AV2 is again the test set.
- ``ethucy-loo:<scene>``: the ETH/UCY leave-one-scene-out protocol; trains on every ETH/UCY file but the
  test scene's (eth, hotel, univ, zara1, zara2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.data import Track, default_data_root, load_tracks

ETHUCY_SPLITS = {
    "eth": ("biwi_eth",),
    "hotel": ("biwi_hotel",),
    "univ": ("students001", "students003"),
    "zara1": ("crowds_zara01",),
    "zara2": ("crowds_zara02",),
}
#: Share of KITTI sequences held out for validation, whole sequences (scenes), chosen by a hash of the scene id:
#: kitti_0000, 0004, 0012, 0014, 0016, 0017 and 0018 (about 300 vehicle windows). Designs and recipes are chosen
#: on the validation split, never on AV2, which stays the test set.
VAL_SCENE_FRACTION = 0.25
#: Share of agents held out where a source has too few scenes to hold whole ones out: the one Lyft scene
#: (vehicles from another city and a tracker, for validation) and the ETH/UCY files (pedestrians).
VAL_AGENT_FRACTION = {"lyft": 0.2, "other": 0.1}
MIN_UNKNOWN_LEN = 20


def _bucket(key: str) -> float:
    return hashlib.sha256(key.encode()).digest()[0] / 256


def is_validation(track: Track) -> bool:
    """Whether a track belongs to the validation split (deterministic, by scene or by agent)."""
    if track.scene_id.startswith("kitti_"):
        return _bucket(track.scene_id) < VAL_SCENE_FRACTION
    share = VAL_AGENT_FRACTION["lyft" if track.scene_id.startswith("lyft_") else "other"]
    return _bucket(f"{track.scene_id}/{track.agent_id}") < share


def split_train_val(tracks: list[Track]) -> tuple[list[Track], list[Track]]:
    """(train, validation): the validation tracks early-stop training and choose designs and recipes."""
    train = [t for t in tracks if not is_validation(t)]
    val = [t for t in tracks if is_validation(t)]
    return train, val


def ethucy_tracks(
    root: Path, scenes: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()
) -> list[Track]:
    tracks = load_tracks(root / "ethucy" / "raw", "ethucy")
    if scenes is not None:
        tracks = [t for t in tracks if t.scene_id in scenes]
    return [t for t in tracks if t.scene_id not in exclude]


def corpus(name: str, root: str | Path | None = None) -> list[Track]:
    """All tracks of a named corpus (train and validation together)."""
    root = Path(root) if root else default_data_root()
    if name in ("shipped", "10hz"):
        tracks = load_tracks(root / "kitti" / "normalized" / "kitti_tracking_10hz.csv", "csv") + load_tracks(
            root / "lyft_l5" / "raw" / "single_scene.zarr", "lyft"
        )
        if name == "shipped":
            tracks += ethucy_tracks(root)
        # Lyft's tracker emits ~1,300 short 'unknown' tracks, mostly clutter: keep only sustained ones
        return [t for t in tracks if t.agent_type != "unknown" or len(t.t) >= MIN_UNKNOWN_LEN]
    if name.startswith("ethucy-loo:"):
        test = name.split(":", 1)[1]
        if test not in ETHUCY_SPLITS:
            raise ValueError(f"unknown ETH/UCY test scene {test!r}; expected one of {sorted(ETHUCY_SPLITS)}")
        return ethucy_tracks(root, exclude=ETHUCY_SPLITS[test])
    raise ValueError(f"unknown corpus {name!r}; expected 'shipped', '10hz' or 'ethucy-loo:<scene>'")


def test_set(name: str, root: str | Path | None = None) -> list[Track]:
    """The held-out tracks that go with a corpus."""
    root = Path(root) if root else default_data_root()
    if name in ("shipped", "10hz"):
        return load_tracks(root / "av2" / "raw", "av2")
    if name.startswith("ethucy-loo:"):
        return ethucy_tracks(root, scenes=ETHUCY_SPLITS[name.split(":", 1)[1]])
    raise ValueError(f"unknown corpus {name!r}")
