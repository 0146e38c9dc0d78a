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
VAL_FRACTION = 0.1
MIN_UNKNOWN_LEN = 20


def _val_bucket(track: Track) -> bool:
    """Deterministic ~10% validation split by (scene, agent)."""
    digest = hashlib.sha256(f"{track.scene_id}/{track.agent_id}".encode()).digest()
    return digest[0] < 256 * VAL_FRACTION


def split_train_val(tracks: list[Track]) -> tuple[list[Track], list[Track]]:
    train = [t for t in tracks if not _val_bucket(t)]
    val = [t for t in tracks if _val_bucket(t)]
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
