"""extract.spool: decoded frames reach the shared face consumer through files, not the result pipe;
the same cache either way, and no spool left behind by a run or by a killed one."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np

import extract.spool as spool
from extract import open_cache
from extract.config import ExtractConfig
from extract.decode import Decoded
from extract.pipeline import Failure, Loaded, ManifestItem
from extract.run import RunOptions, run_extraction
from tests.conftest import write_manifest

CFG = ExtractConfig(face_weights="random", frame_size=96, face_batch=8)


def _loaded(utt: str, n_frames: int, seed: int) -> Loaded:
    frames = np.random.default_rng(seed).integers(0, 255, (n_frames, 64, 64, 3), dtype=np.uint8)
    media = Decoded(np.zeros(400, np.float32), frames, np.arange(n_frames, dtype=np.float32), n_frames > 0)
    return Loaded(ManifestItem(utt, f"/{utt}.mp4"), media, np.zeros((3, 4), np.float32), 0.025)


def test_a_chunk_travels_as_file_names_and_comes_back_whole(tmp_path):
    chunk = [_loaded("a", 5, 0), Failure("b", "/b.mp4", "video", "broken"), _loaded("c", 0, 1), _loaded("d", 3, 2)]
    sent = spool.stash(chunk, str(tmp_path))
    assert len(pickle.dumps(chunk)) > 98_000 > 10_000 > len(pickle.dumps(sent))  # names and offsets, not frames
    assert isinstance(sent[0].media.frames, spool.SpooledFrames) and sent[1] is chunk[1]
    assert len(sent[2].media.frames) == 0 and not isinstance(sent[2].media.frames, spool.SpooledFrames)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]  # one file for the chunk, none half-written
    with spool.unstashed(pickle.loads(pickle.dumps(sent))) as back:
        for before, after in zip(chunk, back):
            if isinstance(before, Loaded):
                np.testing.assert_array_equal(after.media.frames, before.media.frames)
    assert not list(tmp_path.iterdir())  # consumed: deleted


def test_the_shared_path_stores_the_same_cache_through_the_spool_as_through_the_pipe(clips, tmp_path):
    names = ["mp4", "noface", "wav", "mkv"]
    manifest = write_manifest(tmp_path / "m.csv", [{"utt_id": n, "path": str(clips[n].path)} for n in names])
    caches = {}
    for way in (True, False):
        options = RunOptions(
            workers=2, face_models="shared", device="cpu", schedule="count", shard_size=2, threads=1, progress=False
        )
        options.frame_spool = way
        summary = run_extraction(manifest, tmp_path / f"cache-{way}", CFG, options)
        assert (summary.extracted, summary.failures) == (len(names), [])
        caches[way] = open_cache(summary.cache_dir)
        assert not list(summary.cache_dir.glob(f"{spool.PREFIX}*"))  # this run's spool is gone
        assert not list(spool.SHM.glob(f"{spool.PREFIX}{os.getpid()}-*"))
    for name in names:
        for field in ("face", "face_found", "fbank"):
            np.testing.assert_array_equal(caches[True][name][field], caches[False][name][field])
    assert caches[True]["mp4"]["face_found"].any()


def test_a_killed_runs_spool_is_removed_by_the_next_run_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{spool.PREFIX}{int(dead.stdout)}-x"
    live = tmp_path / f"{spool.PREFIX}{os.getpid()}-y"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "chunk.npy").write_bytes(b"frames")
    spool.remove_stale(tmp_path)
    assert not stale.exists() and live.exists()
