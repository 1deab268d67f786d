#!/usr/bin/env bash
# IEMOCAP: speech emotion recognition (4 classes: neutral, happy + excited, angry, sad), the face as
# privileged information at training time only. Leave-one-session-out cross-validation: fold f tests
# session f+1, validates on the next session, trains on the other three. The sweep is the paper's
# (configs/paper/emotion-nonseq.yaml; configs/paper/emotion-seq.yaml for the sequential setting).
#
#   examples/iemocap/run.sh --data /data --work exp/iemocap --ngpu 1 [--stage N] [--stop-stage M]
#
#   1 manifest    DATA/IEMOCAP_full_release (dialog videos + EmoEvaluation turns) -> WORK/manifests/iemocap.csv
#   2 extract     each turn's log-mels + the speaking actor's face (their half of the frame) (a rerun resumes)
#   3 teachers    per fold: the audio-visual teacher and its audio-only control (a rerun resumes)
#   4 students    per fold: every variant x seed on its teacher's cached targets (teachers reused)
#   5 report      WORK/exp/results.md: UAR / WAR mean ± std over folds, gains over `none`, the video's share
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../common/recipe.sh"

recipe=iemocap
stage=1
stop_stage=5
data=/data # holds IEMOCAP_full_release/ as released
iemocap=   # the IEMOCAP_full_release folder itself (default: DATA/IEMOCAP_full_release)
classes=4  # 4 (the usual protocol) or all
work=exp/iemocap
ngpu=1
nproc=
nj=8
cache_root=
sweep=$repo/configs/paper/emotion-nonseq.yaml
extract_args=
set=()
help_message=$(recipe_help "  --data DIR                 the folder holding IEMOCAP_full_release/ [$data]
  --iemocap DIR              the IEMOCAP_full_release folder itself [DATA/IEMOCAP_full_release]
  --classes 4|all            emotion classes [$classes]")

. "$here/../common/parse_options.sh"
[ $# -eq 0 ] || usage_error "unexpected argument '$1' (see --help)"
recipe_setup
iemocap=${iemocap:-$data/IEMOCAP_full_release}
manifest=$work/manifests/iemocap.csv

if stage_on 1; then
  if [ -f "$manifest" ]; then
    log "stage 1: $manifest exists, kept (delete it to list the dataset again)"
  else
    log "stage 1: manifest of $iemocap ($classes classes)"
    "$PYTHON" -m manifests iemocap "$iemocap" --out "$manifest" --classes "$classes"
  fi
fi
if stage_on 2; then run_extract "$manifest"; fi
if stage_on 3; then run_teachers; fi
if stage_on 4; then run_students; fi
if stage_on 5; then run_report; fi
