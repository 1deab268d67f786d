"""distill.serve.verification and `distill verify`: pair scores, decisions at the val EER threshold, trial lists."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from inference_runs import assert_close, trained_runs

from distill.cli import main
from distill.eval import metrics as M
from distill.serve.model import Model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_runs(tmp_path_factory)


@pytest.mark.parametrize("norm", ["none", "asnorm"])
def test_verify_two_files(runs, capsys, norm):
    a, b = str(runs.wavs[0]), str(runs.wavs[2])
    args = ["verify", str(runs.speaker), a, b, "--quiet"]
    assert main(args + (["--norm", "none"] if norm == "none" else [])) == 0  # default: AS-norm (the run has a cohort)
    line, summary = capsys.readouterr().out.strip().splitlines()
    model = Model.from_run(runs.speaker)
    score = float(model.score(a, b, norm=norm)[0])
    point = model.threshold if norm == "none" else model.threshold["asnorm"]
    decision = "same" if score >= point["threshold"] else "different"
    assert line == f"{a} {b} {score:.4f} {decision}"
    kind = "cosine" if norm == "none" else "AS-norm"
    assert summary.startswith(f"verify: 1 of 1 pair(s) scored ({kind}), threshold {point['threshold']:.4f}")
    assert main(["verify", str(runs.speaker), a]) == 2  # one file is not a pair


def _trials(tmp_path, runs, names: list[str]) -> tuple:
    folder = tmp_path / "data"
    folder.mkdir()
    for p in runs.wavs:
        shutil.copy(p, folder / p.name)
    pairs = [(1, 0, 3), (0, 0, 1), (1, 1, 2), (0, 2, 3), (1, 1, 3), (0, 0, 2)]
    lines = [f"{label} {names[i]} {names[j]}" for label, i, j in pairs]
    (folder / "trials.txt").write_text("\n".join(lines) + "\n")
    return folder, pairs


def test_trial_list_of_paths_scores_every_pair_and_reports_eer(runs, tmp_path, capsys):
    names = [p.name for p in runs.wavs]  # relative to the trial file's folder
    folder, pairs = _trials(tmp_path, runs, names)
    out = tmp_path / "scores.csv"
    assert (
        main(["verify", str(runs.speaker), "--trials", str(folder / "trials.txt"), "--out", str(out), "--quiet"]) == 0
    )
    table = pd.read_csv(out)
    assert list(table.columns) == ["label", "enrol", "test", "cosine", "score", "decision"] and len(table) == len(pairs)
    model = Model.from_run(runs.speaker)
    files = [str(p) for p in runs.wavs]
    enrol, test = [files[i] for _, i, _ in pairs], [files[j] for _, _, j in pairs]
    assert_close(table["cosine"].to_numpy(), model.score(enrol, test))
    want = model.score(enrol, test, norm="asnorm")
    assert_close(table["score"].to_numpy(), want)
    found = M.verification_metrics(want, np.array([label for label, _, _ in pairs], bool))
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"EER={found['eer']:.3f} minDCF={found['min_dcf']:.3f}" in summary
    threshold = model.threshold["asnorm"]["threshold"]
    assert table["decision"].tolist() == ["same" if s >= threshold else "different" for s in want]


def test_trial_list_of_manifest_ids_with_a_bad_file(runs, tmp_path, capsys):
    names = ["u0", "u1", "u2", "bad"]
    folder, pairs = _trials(tmp_path, runs, names)
    shutil.copy(runs.not_audio, folder / "bad.wav")
    pd.DataFrame({"utt_id": names, "path": [p.name for p in runs.wavs[:3]] + ["bad.wav"]}).to_csv(
        folder / "m.csv", index=False
    )
    assert (
        main(
            [
                "verify",
                str(runs.speaker),
                "--trials",
                str(folder / "trials.txt"),
                "--manifest",
                str(folder / "m.csv"),
                "--quiet",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    kept = [p for p in pairs if 3 not in p[1:]]
    assert len(lines) == len(kept) + 1 and lines[-1].startswith(f"verify: {len(kept)} of {len(pairs)} pair(s) scored")
    assert lines[0].split()[:3] == [str(kept[0][0]), names[kept[0][1]], names[kept[0][2]]]
    assert "bad" in captured.err and captured.err.count("error:") == 1


def test_threshold_is_recorded_on_first_use_for_an_older_run(runs, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(runs.speaker, run)
    (run / "verification.json").unlink()
    a, b = str(runs.wavs[0]), str(runs.wavs[1])
    assert main(["verify", str(run), a, b, "--quiet"]) == 0
    assert json.loads((run / "verification.json").read_text()) == json.loads(
        (runs.speaker / "verification.json").read_text()
    )
    assert capsys.readouterr().out.splitlines()[-1].startswith("verify: 1 of 1 pair(s) scored (AS-norm), threshold")
    # without the cache it cannot be computed: scores, no decision, a warning
    (run / "verification.json").unlink()
    (run / "cohort.npy").unlink()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["cache"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.warns(UserWarning, match="no verification threshold"):
        assert main(["verify", str(run), a, b, "--quiet"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split()[-1] not in ("same", "different")
    assert not (run / "verification.json").exists()


def _voxceleb1(tmp_path, runs) -> tuple:
    """VoxCeleb1 as published: the audio under wav/idXXXXX/<video>/<nnnnn>.wav, the official list at the
    root naming those paths with their .wav; and the recipe's manifest, whose utt_ids drop the .wav."""
    root = tmp_path / "VoxCeleb1"
    names = [f"id1027{i // 2}/vid{i}/0000{i}.wav" for i in range(len(runs.wavs))]
    for src, name in zip(runs.wavs, names):
        (root / "wav" / name).parent.mkdir(parents=True)
        shutil.copy(src, root / "wav" / name)
    pairs = [(1, 0, 1), (0, 0, 2), (1, 2, 3), (0, 1, 3)]
    (root / "veri_test2.txt").write_text("".join(f"{lab} {names[i]} {names[j]}\n" for lab, i, j in pairs))
    ids = [n.removesuffix(".wav") for n in names]
    pd.DataFrame({"utt_id": ids, "path": [str(root / "wav" / n) for n in names]}).to_csv(root / "m.csv", index=False)
    return root, names, len(pairs)


def test_official_voxceleb1_list_with_audio_root_or_the_recipes_manifest(runs, tmp_path, capsys):
    root, names, n_pairs = _voxceleb1(tmp_path, runs)
    base = ["verify", str(runs.speaker), "--trials", str(root / "veri_test2.txt"), "--quiet", "--norm", "none"]
    # as docs/inference.md once had it: entries looked up beside the list, where none is
    assert main(base) == 2
    err = capsys.readouterr().err
    assert f"the first, {names[0]!r}, would be {root / names[0]}" in err and "give --audio-root DIR" in err
    scores = {}
    for how in (["--audio-root", str(root / "wav")], ["--manifest", str(root / "m.csv")]):
        assert main([*base, *how, "--out", str(tmp_path / "s.csv")]) == 0, capsys.readouterr().err
        assert capsys.readouterr().out.strip().startswith(f"verify: {n_pairs} of {n_pairs} pair(s) scored")
        scores[how[0]] = pd.read_csv(tmp_path / "s.csv")
    assert scores["--manifest"]["enrol"].tolist() == scores["--audio-root"]["enrol"].tolist()  # the list's names
    assert_close(scores["--manifest"]["score"].to_numpy(), scores["--audio-root"]["score"].to_numpy())
    # several roots: the first that holds an entry; an absent root before it changes nothing
    assert main([*base, "--audio-root", str(tmp_path / "nowhere"), "--audio-root", str(root / "wav")]) == 0
    capsys.readouterr()


def test_trial_entries_that_match_nothing_are_named_with_the_remedy(runs, tmp_path, capsys):
    root, names, _ = _voxceleb1(tmp_path, runs)
    table = pd.read_csv(root / "m.csv")
    table.iloc[1:].to_csv(root / "short.csv", index=False)  # the manifest lacks the first entry
    base = ["verify", str(runs.speaker), "--trials", str(root / "veri_test2.txt"), "--quiet"]
    assert main([*base, "--manifest", str(root / "short.csv")]) == 2
    err = capsys.readouterr().err
    missing = names[0].removesuffix(".wav")
    assert f"names 1 of {len(names)} entries that are no utt_id of" in err and f"{names[0]!r} or {missing!r}" in err
    assert "--audio-root DIR" in err
    assert main([*base, "--manifest", str(root / "m.csv"), "--audio-root", str(root / "wav")]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_verify_on_an_emotion_run_says_it_decides_nothing(runs, capsys):
    assert main(["verify", str(runs.emotion), str(runs.wavs[0]), str(runs.wavs[1]), "--quiet"]) == 0
    line, summary = capsys.readouterr().out.strip().splitlines()
    assert len(line.split()) == 3  # a, b, score: no decision
    assert summary.startswith("verify: 1 of 1 pair(s) scored (cosine), no threshold (emotion runs have none")
