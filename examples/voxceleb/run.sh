#!/usr/bin/env bash
# VoxCeleb, open-set speaker verification: train on VoxCeleb2 dev (audio + face), test on VoxCeleb1-O
# (audio only; speakers never seen in training), the face as privileged information. The sweep is
# the paper's (configs/paper/speaker-nonseq.yaml; configs/paper/speaker-seq.yaml for the sequential setting).
#
#   examples/voxceleb/run.sh --data /data --work exp/voxceleb --ngpu 8 [--stage N] [--stop-stage M]
#
#   1 manifests   DATA/VoxCeleb2 (dev/mp4/...) and DATA/VoxCeleb1 (wav/... + veri_test2.txt) ->
#                 WORK/manifests/vox2+vox1.csv: dev speakers train, a speaker-disjoint share of them
#                 validates (model selection by val EER), the VoxCeleb1 clips of the trial list test
#   2 extract     log-mels + face embeddings (VoxCeleb1: audio only) -> WORK/cache/<hash>/ (a rerun resumes)
#   3 teachers    the audio-visual teacher and its audio-only control (a rerun resumes)
#   4 students    every variant x seed on the teacher's cached targets (teachers reused)
#   5 report      WORK/exp/results.md (EER / minDCF on the trial list, gains over `none`, the video's
#                 share), then `distill verify` of the first seed's students on the trial list from the wav files
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../common/recipe.sh"

recipe=voxceleb
stage=1
stop_stage=5
data=/data          # holds VoxCeleb2/ and VoxCeleb1/ as downloaded and unpacked
vox2=               # the VoxCeleb2 folder itself (default: DATA/VoxCeleb2)
vox1=               # the VoxCeleb1 folder itself (default: DATA/VoxCeleb1)
trials=veri_test2.txt # VoxCeleb1-O (cleaned); list_test_hard2.txt: -H, list_test_all2.txt: -E
val_speakers=0.02   # share of the VoxCeleb2 dev speakers held out for validation
verify_runs="none embed" # stage 5 verifies the first seed of these students
work=exp/voxceleb
ngpu=1
nproc=
nj=8
cache_root=
sweep=$repo/configs/paper/speaker-nonseq.yaml
extract_args=
set=()
help_message=$(recipe_help "  --data DIR                 the folder holding VoxCeleb2/ and VoxCeleb1/ [$data]
  --vox2 DIR, --vox1 DIR     the two folders themselves [DATA/VoxCeleb2, DATA/VoxCeleb1]
  --trials NAME              VoxCeleb1's trial list to test on [$trials]
  --val-speakers F           share of the VoxCeleb2 dev speakers held out for validation [$val_speakers]
  --verify-runs 'A B'        stage 5: the students verified on the trial list [$verify_runs]")

. "$here/../common/parse_options.sh"
[ $# -eq 0 ] || usage_error "unexpected argument '$1' (see --help)"
recipe_setup
vox2=${vox2:-$data/VoxCeleb2}
vox1=${vox1:-$data/VoxCeleb1}
m=$work/manifests
manifest=$m/vox2+vox1.csv
# The voxceleb1 recipe's copy of the trial list (utterance ids, the trials of clips present), beside its
# manifest: what the runs are scored on (data.trials) and what stage 5 verifies.
trial_list=$m/vox1.$trials
overrides+=("data.trials=$trial_list")

if stage_on 1; then
  if [ -f "$manifest" ]; then
    log "stage 1: $manifest exists, kept (delete it to list the datasets again)"
  else
    [ -f "$vox1/$trials" ] || die "no $vox1/$trials: download the trial list into the VoxCeleb1 folder"
    log "stage 1: manifests of $vox2 (train, val) and $vox1 (test: the clips of $trials)"
    "$PYTHON" -m manifests voxceleb2 "$vox2" --out "$m/vox2.csv" --val-speakers "$val_speakers"
    "$PYTHON" -m manifests voxceleb1 "$vox1" --out "$m/vox1.csv"
    "$PYTHON" "$here/local/open_set_manifest.py" --train "$m/vox2.csv" --test "$m/vox1.csv" \
      --trials "$trial_list" --out "$manifest"
  fi
fi
if stage_on 2; then run_extract "$manifest"; fi
if stage_on 3; then run_teachers; fi
if stage_on 4; then run_students; fi
if stage_on 5; then
  run_report
  # The trained audio-only models on the trial list, from the wav files (docs/inference.md): its
  # entries are the VoxCeleb1 manifest's utterance ids.
  for label in $verify_runs; do
    run=$(find "$exp" -path "*/$label/seed*/metrics.json" -printf '%h\n' | sort | head -n 1)
    if [ -z "$run" ]; then
      log "stage 5: no finished '$label' student to verify"
      continue
    fi
    name=${run#"$exp"/}
    scores=$exp/verify/${name//\//_}.csv
    if [ -f "$scores" ]; then
      log "stage 5: $scores exists, kept"
      continue
    fi
    log "stage 5: distill verify $name on $trials"
    "$PYTHON" -m distill verify "$run" --trials "$trial_list" --manifest "$m/vox1.csv" --device "$device" \
      --out "$scores" --quiet
  done
fi
