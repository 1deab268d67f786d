# What every recipe (examples/<dataset>/run.sh) shares: the options, and the stages
#   2 extract   3 teachers (+ the audio-only control)   4 students (+ the control's)   5 report
# Stage 1 (the dataset's manifests) and any dataset-specific evaluation stay in the run.sh.
#
# A run.sh sources this first, sets its options' defaults (recipe, stage, stop_stage, work, ngpu,
# nproc, nj, cache_root, sweep, extract_args and the array `set` of KEY=VALUE config overrides),
# parses them (parse_options.sh), then calls recipe_setup. Sets: repo, PYTHON, exp, device, launch.

recipe_common=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe_common/../.." && pwd)
# The repository's own code, whether or not it is installed (as WeSpeaker's path.sh does).
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi

# --help: the run.sh's header comment, its own options ($1), then the options every recipe takes.
recipe_help() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  cat <<EOF

Options [default]:
  --stage N --stop-stage M   run stages N..M [$stage..$stop_stage]
$1
  --work DIR                 everything the recipe writes: manifests, cache, sweep, runs [$work]
  --ngpu N                   GPUs for extraction and training; 0 = CPU only [$ngpu]
  --nproc N                  processes per training run, torchrun when > 1 [--ngpu, 1 on CPU]
  --nj N                     extraction worker processes [$nj]
  --cache-root DIR           where the features go [WORK/cache]
  --sweep FILE               students, seeds, folds, model sizes [${sweep#"$repo"/}]
  --extract-args 'ARGS'      more \`extract run\` options, e.g. '--face-weights dlib --face-batch 512'
  --set KEY=VALUE            a config override for every run (repeatable), e.g. --set train.epochs=10
Environment: PYTHON (default: the repository's .venv/bin/python, else python3).
EOF
}

log() { echo "[$recipe] $*"; }
die() {
  echo "[$recipe] error: $*" >&2
  exit 1
}
usage_error() {
  echo "[$recipe] usage error: $*" >&2
  exit 2
}
# True when stage N is in --stage .. --stop-stage.
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# Check the options and derive the device, the training launcher and the overrides every run gets.
recipe_setup() {
  local name value
  for name in stage stop_stage ngpu nj; do
    value=${!name}
    [[ $value =~ ^[0-9]+$ ]] || usage_error "--${name//_/-} must be a whole number, got '$value'"
  done
  [ "$stage" -le "$stop_stage" ] || usage_error "--stage $stage is after --stop-stage $stop_stage"
  [ "$nj" -ge 1 ] || usage_error "--nj must be >= 1 (extraction workers), got $nj"
  [ -n "$nproc" ] || nproc=$((ngpu > 0 ? ngpu : 1))
  [[ $nproc =~ ^[1-9][0-9]*$ ]] || usage_error "--nproc must be >= 1, got '$nproc'"
  [ -f "$sweep" ] || usage_error "--sweep $sweep: no such file"
  sweep=$(cd "$(dirname "$sweep")" && pwd)/$(basename "$sweep")
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
  exp=$work/exp
  cache_root=${cache_root:-$work/cache}
  overrides=(${set[@]+"${set[@]}"})
  if [ "$ngpu" -eq 0 ]; then
    device=cpu
    overrides+=("train.device=cpu")  # a GPU in the machine is not used when asked for none
  else
    device=cuda
    [ "$nproc" -le "$ngpu" ] || usage_error "--nproc $nproc is more than --ngpu $ngpu (one process per GPU)"
    if [ "$stop_stage" -ge 2 ]; then
      local seen
      seen=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())") || die "cannot import torch with $PYTHON"
      [ "$seen" -ge "$ngpu" ] || usage_error "--ngpu $ngpu, but torch sees $seen CUDA device(s); --ngpu 0 runs on CPU"
    fi
  fi
  if [ "$nproc" -gt 1 ]; then
    launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$nproc")
  else
    launch=("$PYTHON")
  fi
  read -r -a extract_extra <<<"$extract_args"
  log "stages $stage-$stop_stage; work dir $work; $ngpu GPU(s) ($device), $nproc process(es) per training run"
}

# Stage 2: features of every manifest item into CACHE_ROOT/<config hash>/. Rerunning resumes: the
# items already committed are skipped, failed ones retried. The cache directory goes to WORK/cache.path.
run_extract() {
  local manifest=$1 out
  log "stage 2: extract $manifest -> $cache_root ($nj worker(s), faces on $device)"
  if ! "$PYTHON" -m extract run --manifest "$manifest" --cache-root "$cache_root" --workers "$nj" --device "$device" \
    ${extract_extra[@]+"${extract_extra[@]}"} | tee "$work/extract.log"; then
    die "extract failed (above); rerun stage 2 to resume"
  fi
  out=$(tail -n 1 "$work/extract.log" | awk '{print $NF}')
  [ -d "$out" ] || die "extract named no cache directory on its last line (see $work/extract.log)"
  echo "$out" >"$work/cache.path"
}

cache_dir() {
  [ -f "$work/cache.path" ] || die "no cache in $work yet: run stage 2 first"
  cat "$work/cache.path"
}

# WORK/sweep.yaml, sweep.teachers.yaml and plan/: the recipe's sweep with this run's cache, EXP and
# overrides, and the state of every planned run (examples/common/sweep_stage.py). --report: the tables too.
write_sweep() {
  local -a sets=()
  local o
  for o in ${overrides[@]+"${overrides[@]}"}; do sets+=(--set "$o"); done
  "$PYTHON" "$recipe_common/sweep_stage.py" "$sweep" --cache "$(cache_dir)" --out "$exp" --work "$work" \
    ${sets[@]+"${sets[@]}"} "$@" || die "the sweep does not resolve or report (above)"
}

# How many planned runs of ROLE are still to train (repairs are done before, by launch_runs ROLE repair).
pending() { awk -F'\t' '$1 == "new" || $1 == "resume"' "$work/plan/$1.tsv" | wc -l; }

# Launch the planned runs of ROLE in the given states one by one (torchrun for --nproc > 1):
# "new resume" trains, "repair" finishes the teachers evaluated but killed before writing their targets.
launch_runs() {
  local role=$1 states=" $2 " st name dir config failed=0
  local -a args launcher
  while IFS=$'\t' read -r st name dir config; do
    if [[ $states != *" $st "* ]]; then
      [[ $st != done || $states != *" new "* ]] || log "$(printf '  %-8s %s' reused "$name")"
      continue
    fi
    args=("$role" --config "$config" --out "$dir") # the planned config says it all, method and teacher too
    [ "$st" = new ] || args+=(--resume)
    launcher=("${launch[@]}")
    [ "$st" = repair ] && launcher=("$PYTHON") # only evaluation and targets are left: rank 0's work
    if "${launcher[@]}" -m distill "${args[@]}" </dev/null; then
      case $st in new) st=trained ;; resume) st=resumed ;; repair) st=repaired ;; esac
      log "$(printf '  %-8s %s' "$st" "$name")"
    else
      log "$(printf '  %-8s %s (%s)' failed "$name" "$dir")"
      failed=$((failed + 1))
    fi
  done <"$work/plan/$role.tsv"
  [ "$failed" -eq 0 ] || die "$failed $role run(s) failed; rerun the stage to resume them"
}

# Stage 3: the teacher of every combo (and fold) and its audio-only control, as the sweep plans them.
run_teachers() {
  log "stage 3: teachers from $sweep -> $exp"
  write_sweep
  launch_runs teacher repair
  if [ "$(pending teacher)" -eq 0 ]; then
    log "stage 3: every teacher is finished, with its targets: nothing to train"
  elif [ "$nproc" -gt 1 ]; then
    launch_runs teacher "new resume"
  else
    "$PYTHON" -m distill sweep "$work/sweep.teachers.yaml" || die "a teacher failed (above); rerun stage 3 to resume"
  fi
}

# Stage 4: every student variant x seed on its teacher's cached targets; finished teachers are reused
# (a teacher not trained yet is trained first).
run_students() {
  log "stage 4: students and controls from $sweep -> $exp"
  write_sweep
  launch_runs teacher repair
  if [ "$(pending teacher)" -eq 0 ] && [ "$(pending student)" -eq 0 ]; then
    log "stage 4: every student is finished: nothing to train"
  elif [ "$nproc" -gt 1 ]; then
    launch_runs teacher "new resume"
    launch_runs student "new resume"
  else
    "$PYTHON" -m distill sweep "$work/sweep.yaml" || die "a run failed (above); rerun stage 4 to resume"
  fi
}

# Stage 5: the sweep's tables over the finished runs (trains nothing), printed. `distill sweep` writes
# them too when it ends, so they are rewritten only when a run finished after them.
run_report() {
  if [ -f "$exp/results.md" ] && [ -z "$(find "$exp" -name metrics.json -newer "$exp/results.md" | head -n 1)" ]; then
    log "stage 5: $exp/results.md is up to date with every finished run"
  else
    log "stage 5: results of $exp"
    write_sweep --report
  fi
  cat "$exp/results.md"
}
