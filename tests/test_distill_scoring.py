"""distill.eval.scoring (AS-norm) and the cohort that distill.eval.calibration records in a speaker run."""

from __future__ import annotations

import numpy as np
import pytest
from inference_runs import assert_close, trained_runs

from distill.eval.scoring import as_norm, speaker_cohort, top_k_stats


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_as_norm_against_a_direct_loop():
    rng = np.random.default_rng(0)
    enrol, test, cohort = rng.standard_normal((7, 5)), rng.standard_normal((7, 5)), rng.standard_normal((40, 5))
    k = 6
    want = []
    for e, t in zip(enrol, test):
        raw = _unit(e) @ _unit(t)
        se = np.sort(_unit(cohort) @ _unit(e))[-k:]
        st = np.sort(_unit(cohort) @ _unit(t))[-k:]
        want.append(0.5 * ((raw - se.mean()) / se.std() + (raw - st.mean()) / st.std()))
    assert_close(as_norm(enrol, test, cohort, top_k=k), np.array(want), 1e-5)
    # top_k larger than the cohort uses all of it; an empty cohort is an error
    assert_close(top_k_stats(enrol, cohort[:3], 300)[0], (_unit(enrol) @ _unit(cohort[:3]).T).mean(1), 1e-6)
    with pytest.raises(ValueError, match="cohort"):
        as_norm(enrol, test, cohort[:0])


def test_speaker_cohort_is_the_mean_unit_embedding_per_speaker():
    emb = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [1.0, 2.0]])
    cohort = speaker_cohort(emb, ["b", "a", "b", "a"])  # rows in sorted speaker order: a, b
    a = _unit(np.mean([_unit(emb[1]), _unit(emb[3])], 0))
    b = _unit(np.mean([_unit(emb[0]), _unit(emb[2])], 0))
    assert_close(cohort, np.stack([a, b]), 1e-6)


def test_the_recorded_cohort_is_made_of_the_training_speakers(tmp_path_factory):
    from distill.eval.calibration import COHORT_PER_SPEAKER
    from distill.eval.run_eval import load_run
    from distill.serve.model import Model

    runs = trained_runs(tmp_path_factory)
    model = Model.from_run(runs.speaker)
    trainer = load_run(runs.speaker)
    ids = trainer.cache.utt_ids(trainer.data.ids["train"])
    speakers = trainer.cache.index.loc[ids, "speaker"].astype(str).to_numpy()
    keep = np.concatenate([np.flatnonzero(speakers == s)[:COHORT_PER_SPEAKER] for s in sorted(set(speakers))])
    emb = model.forward_fbanks([trainer.cache.read(ids[i], fields=("fbank",))["fbank"] for i in keep])[0]
    assert_close(model.cohort, speaker_cohort(emb, speakers[keep]))
    assert model.cohort.shape == (len(set(speakers)), model.embed_dim)
    assert model.threshold["asnorm"]["cohort"] == len(model.cohort)
