"""extract run / info / verify end to end on generated media: good items, every bad input, resume,
exit codes, the lock, and the manifest checks that happen before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from extract import open_cache
from extract.cache import cache_lock
from extract.cli import EXIT_BUSY, EXIT_FAILURES, EXIT_OK, EXIT_USAGE, main
from extract.config import ExtractConfig
from extract.faces import resolve_face_weights
from extract.run import ManifestError, RunOptions, load_manifest, run_extraction
from manifests.media import write_video
from tests.conftest import tone, write_manifest

# Small letterboxed frames keep MTCNN's image pyramid (most of the time per item) cheap in tests.
CFG = ExtractConfig(face_weights="random", frame_size=128)
RANDOM = ["--face-weights", "random", "--frame-size", "128", "--threads", "1", "--no-progress"]

GOOD = ["mp4", "mkv", "avi", "webm", "flv", "weird", "noface", "wav", "m4a"]
# bad item → (stage, words the reason must contain)
BAD = {
    "missing": ("input", "file not found"),
    "empty": ("input", "empty file"),
    "text": ("probe", "not a readable media file"),
    "truncated": ("audio", "truncated"),
    "no_audio": ("audio", "no audio stream"),
    "too_short": ("fbank", "shorter than the 25 ms feature window"),
}


@pytest.fixture(scope="module")
def corpus(clips, tmp_path_factory) -> Path:
    """A manifest with every good clip (paths relative to it where possible) and every bad input."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "empty.mp4").touch()
    (root / "notes.mp4").write_text("not a video\n")
    mkv = clips["mkv"].path.read_bytes()
    (root / "cut.mkv").write_bytes(mkv[: len(mkv) // 2])
    write_video(root / "silent.mp4", np.zeros((5, 32, 32, 3), np.uint8), 5)
    write_video(root / "blip.wav", None, audio=tone(0.01, 16000))
    bad_paths = {
        "missing": "gone.mp4",
        "empty": "empty.mp4",
        "text": "notes.mp4",
        "truncated": "cut.mkv",
        "no_audio": "silent.mp4",
        "too_short": "blip.wav",
    }
    rows = [
        {"utt_id": u, "path": str(clips[u].path), "speaker": f"spk{i % 3}", "split": "train"}
        for i, u in enumerate(GOOD)
    ]
    rows += [{"utt_id": u, "path": p, "speaker": "spk9", "split": "test"} for u, p in bad_paths.items()]
    return write_manifest(root / "manifest.csv", rows)


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory):
    cache_root = tmp_path_factory.mktemp("cache")
    summary = run_extraction(corpus, cache_root, CFG, RunOptions(workers=1, shard_size=4, threads=1, progress=False))
    return summary, cache_root


def test_good_items_are_stored_with_their_labels(extracted, clips):
    summary, _ = extracted
    cache = open_cache(summary.cache_dir)
    assert sorted(cache) == sorted(GOOD) and summary.extracted == len(GOOD)
    # the first committed chunk (shard_size 4, some of its items may have failed) and when: start-up's share
    assert 1 <= summary.first_items <= 4 and 0 < summary.first_seconds < summary.seconds
    assert f"first {summary.first_items} after {summary.first_seconds:.1f} s" in summary.line()
    for utt in GOOD:
        item, clip = cache[utt], clips[utt]
        assert item["fbank"].dtype == np.float32 and item["fbank"].shape[1] == 80
        assert abs(len(item["fbank"]) - 100 * clip.seconds) <= 10
        assert np.isfinite(item["fbank"]).all()
        assert item["has_video"] == clip.has_video
        assert item["path"] == str(clip.path) and item["speaker"].startswith("spk") and item["split"] == "train"
        if clip.has_video:
            assert len(item["face_found"]) == 5
            np.testing.assert_allclose(item["frame_times"], np.arange(5) / 5, atol=1e-6)
        else:
            assert item["face"].shape == (0, 512) and item["face_found"].shape == (0,)
        if clip.faces:
            assert item["face_found"].all()
            np.testing.assert_allclose(np.linalg.norm(item["face"], axis=1), 1.0, atol=2e-3)  # float16
        else:
            assert not item["face_found"].any() and not item["face"].any()  # never filled
    assert cache.config["hash"] == summary.cache_dir.name == CFG.hash(resolve_face_weights("random", 0).identity)
    assert (
        cache.config["face_weights_identity"] == "random(seed=0,init=he,rng=own)"
        and "torch" in cache.config["versions"]
    )


def test_every_bad_input_gets_a_failure_row(extracted):
    summary, _ = extracted
    table = pd.read_csv(summary.cache_dir / "failures.csv").set_index("utt_id")
    assert sorted(table.index) == sorted(BAD)
    for utt, (stage, words) in BAD.items():
        assert table.loc[utt, "stage"] == stage and words in table.loc[utt, "reason"], table.loc[utt].to_dict()
    assert summary.exit_code() == EXIT_OK and summary.exit_code(strict=True) == EXIT_FAILURES


def test_rerun_skips_what_is_cached(extracted, corpus, capsys):
    summary, cache_root = extracted
    before = (summary.cache_dir / "index.jsonl").read_text()
    code = main(["run", "--manifest", str(corpus), "--cache-root", str(cache_root), *RANDOM])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == EXIT_OK
    assert out[-1].split()[-1] == str(summary.cache_dir)  # scripts chain on the last word
    assert f"0 extracted, {len(GOOD)} already cached, {len(BAD)} failed" in out[-1]
    assert (summary.cache_dir / "index.jsonl").read_text() == before  # nothing re-extracted
    code = main(["run", "--manifest", str(corpus), "--cache-root", str(cache_root), "--strict", *RANDOM])
    assert code == EXIT_FAILURES


def test_info_and_verify(extracted, capsys):
    summary, _ = extracted
    assert main(["info", str(summary.cache_dir), "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["items"] == len(GOOD) and info["with_video"] == 7
    assert info["face_found_rate"] == pytest.approx(6 / 7, abs=1e-3)  # 6 face clips of 7 videos, all frames
    assert info["failures"]["input: file not found"] == 1 and sum(info["failures"].values()) == len(BAD)
    assert info["bytes_per_hour"] > 0
    assert main(["info", str(summary.cache_dir)]) == EXIT_OK
    assert "faces found  85.7%" in capsys.readouterr().out
    assert main(["verify", str(summary.cache_dir)]) == EXIT_OK
    assert "read back whole and finite" in capsys.readouterr().out


def test_all_failing_manifest_exits_nonzero(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", [{"utt_id": "a", "path": "nope.mp4"}])
    assert main(["run", "--manifest", str(manifest), "--cache-root", str(tmp_path / "c"), *RANDOM]) == EXIT_FAILURES
    assert "0 extracted, 0 already cached, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"utt_id": "a", "file": "x.mp4"}], "lacks required column(s) path"),
        ([{"utt_id": "a", "path": "x.mp4"}, {"utt_id": "a", "path": "y.mp4"}], "duplicate utt_id(s), e.g. 'a'"),
        ([{"utt_id": "a", "path": "x.mp4", "crop": "middle"}], "crop must be one of"),
        ([{"utt_id": "a", "path": "x.mp4", "start": "soon"}], "start must be seconds"),
        ([{"utt_id": "", "path": "x.mp4"}], "empty utt_id on line(s) 2"),
    ],
)
def test_bad_manifest_fails_before_any_work(tmp_path, capsys, rows, message):
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_manifest(manifest)
    assert main(["run", "--manifest", str(manifest), "--cache-root", str(tmp_path / "c"), *RANDOM]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # no cache directory, no lock, no work


def test_paths_are_relative_to_the_manifest_and_parquet_works(tmp_path, clips):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a clip.wav").write_bytes(clips["wav"].path.read_bytes())
    pd.DataFrame([{"utt_id": "rel", "path": "media/a clip.wav", "emotion": "hap"}]).to_parquet(tmp_path / "m.parquet")
    summary = run_extraction(tmp_path / "m.parquet", tmp_path / "c", CFG, RunOptions(threads=1, progress=False))
    assert summary.extracted == 1 and open_cache(summary.cache_dir)["rel"]["emotion"] == "hap"


def test_settings_change_the_cache_directory(tmp_path, clips, extracted):
    manifest = write_manifest(tmp_path / "m.csv", [{"utt_id": "v", "path": str(clips["wav"].path)}])
    cfg40 = ExtractConfig(face_weights="random", frame_size=128, n_mels=40)
    summary = run_extraction(manifest, tmp_path / "c", cfg40, RunOptions(threads=1, progress=False))
    assert summary.cache_dir.name != extracted[0].cache_dir.name
    assert open_cache(summary.cache_dir)["v"]["fbank"].shape[1] == 40
    assert ExtractConfig(face_batch=1).hash() == ExtractConfig(face_batch=64).hash()  # speed-only setting


def test_a_second_run_on_a_busy_cache_refuses(extracted, corpus, capsys):
    summary, cache_root = extracted
    with cache_lock(summary.cache_dir):
        code = main(["run", "--manifest", str(corpus), "--cache-root", str(cache_root), *RANDOM])
    assert code == EXIT_BUSY
    assert "being written by another `extract run`" in capsys.readouterr().err


def test_console_entry_point(extracted, corpus, capsys):
    summary, cache_root = extracted
    proc = subprocess.run(
        [sys.executable, "-m", "extract", "run", "--manifest", str(corpus), "--cache-root", str(cache_root), *RANDOM],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].split()[-1] == str(summary.cache_dir)
    with pytest.raises(SystemExit) as exc:  # the parser `python -m extract` runs (above), in this process
        main(["run", "--help"])
    assert exc.value.code == 0 and "--face-weights" in capsys.readouterr().out


def test_device_is_checked_before_work_and_not_hashed(tmp_path, clips, capsys, extracted):
    manifest = write_manifest(tmp_path / "m.csv", [{"utt_id": "v", "path": str(clips["wav"].path)}])
    args = ["run", "--manifest", str(manifest), "--cache-root", str(tmp_path / "c"), *RANDOM]
    if not __import__("torch").cuda.is_available():
        assert main([*args, "--device", "cuda"]) == EXIT_USAGE
        assert "CUDA is not available" in capsys.readouterr().err
        assert not (tmp_path / "c").exists()
    assert main([*args, "--device", "cpu"]) == EXIT_OK
    assert capsys.readouterr().out.split()[-1].endswith(extracted[0].cache_dir.name)  # same id as auto
    if not __import__("torch").cuda.is_available():
        assert main(args) == EXIT_OK  # auto falls back to the CPU path and says so
        assert "no CUDA device here, face models run on CPU" in capsys.readouterr().err


def test_config_round_trips_through_its_record():
    cfg = ExtractConfig(n_mels=40, fps=2.5, face_weights="random", face_thresholds=(0.5, 0.6, 0.7))
    record = json.loads(json.dumps(cfg.to_record("random(seed=0,init=he,rng=own)")))  # as config.json holds it
    assert ExtractConfig.from_record(record) == cfg
