#!/usr/bin/env bash
# CREMA-D: speech emotion recognition, the face as privileged information at training time only.
# Speaker-independent 5-fold cross-validation; the sweep (examples/cremad/sweep.yaml) names the students.
#
#   examples/cremad/run.sh --data /data --work exp/cremad --ngpu 1 [--stage N] [--stop-stage M]
#
#   1 manifest    DATA/CREMA-D (VideoFlash/*.flv + AudioWAV/*.wav) -> WORK/manifests/cremad.csv
#   2 extract     log-mels + face embeddings -> WORK/cache/<hash>/ (a rerun resumes)
#   3 teachers    per fold: the audio-visual teacher and its audio-only control (a rerun resumes)
#   4 students    per fold: every variant x seed on its teacher's cached targets (teachers reused)
#   5 report      WORK/exp/results.md: mean ± std over folds, gains over `none`, the video's share
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../common/recipe.sh"

recipe=cremad
stage=1
stop_stage=5
data=/data # holds CREMA-D/ as downloaded
cremad=    # the CREMA-D folder itself (default: DATA/CREMA-D)
work=exp/cremad
ngpu=1
nproc=
nj=8
cache_root=
sweep=$here/sweep.yaml
extract_args=
set=()
help_message=$(recipe_help "  --data DIR                 the folder holding CREMA-D/ [$data]
  --cremad DIR               the CREMA-D folder itself [DATA/CREMA-D]")

. "$here/../common/parse_options.sh"
[ $# -eq 0 ] || usage_error "unexpected argument '$1' (see --help)"
recipe_setup
cremad=${cremad:-$data/CREMA-D}
manifest=$work/manifests/cremad.csv

if stage_on 1; then
  if [ -f "$manifest" ]; then
    log "stage 1: $manifest exists, kept (delete it to list the dataset again)"
  else
    log "stage 1: manifest of $cremad"
    "$PYTHON" -m manifests cremad "$cremad" --out "$manifest"
  fi
fi
if stage_on 2; then run_extract "$manifest"; fi
if stage_on 3; then run_teachers; fi
if stage_on 4; then run_students; fi
if stage_on 5; then run_report; fi
