#!/usr/bin/env bash
# GPU check: one short run of what a GPU changes, end to end:
#   1. a generated corpus (manifests.demo; SPEAKERS x UTTS clips of ~2 s, talking faces);
#   2. face batches on the GPU (benchmarks/bench_face_gpu.py: the batched MTCNN vs facenet's, the
#      embedder in float32/bf16/fp16, end to end as the shared consumer runs them); then
#      `extract run --device cuda --face-models shared` at FPS frames/s of video: CPU workers decode,
#      CONSUMERS consumer threads per GPU share one face model (one run, into its own cache, per count
#      listed: "2 3" compares the default with three; "2 3 2" also shows what the warm page cache
#      gives the runs after the first), batches of FACE_BATCH frames
#      -> per run: face frames/s, items/s, and the GPU's mean utilisation over the run (nvidia-smi);
#   3. a teacher and a student (method embed), EPOCHS epochs each on CUDA with AMP and torch.compile
#      (train.amp=on, train.compile=on) -> steps/s of the last epoch's training (the first compiles);
#      then one training step at the paper's size (benchmarks/bench_train_step.py: ECAPA 1024 ch,
#      192-d, AAM over 5,994 classes, batch 128 x 300 x 80, bf16, Adam) eager and compiled, median of
#      STEP_STEPS steps -> ms/step.
# Prints one summary block; figures also go to $WORK/gpu_check.json. Exits 2 without CUDA.
# Usage: bash benchmarks/gpu_check.sh
#   (env: PY WORK SPEAKERS UTTS WORKERS FPS FACE_BATCH FACE_ARGS CONSUMERS EPOCHS STEP_STEPS DEVICE)
# DEVICE=cpu runs the same steps on CPU (AMP there is bf16; compiled graphs go to torch's eager backend
# and the step benchmark runs --tiny): a smoke test of this script, not a figure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=${WORK:-.bench/gpu}
SPEAKERS=${SPEAKERS:-20}
UTTS=${UTTS:-24}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
FPS=${FPS:-5}
FACE_BATCH=${FACE_BATCH:-512}
FACE_ARGS=${FACE_ARGS:-}  # e.g. "--face-precision bfloat16 --face-detect-every 2"
CONSUMERS=${CONSUMERS:-2 3}  # --face-consumers of each extract run; the first run's cache trains
EPOCHS=${EPOCHS:-2}
STEP_STEPS=${STEP_STEPS:-20}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

[ "$DEVICE" = cpu ] || "$PY" - <<'EOF' || exit 2
import sys
try:
    import torch
except ImportError:
    sys.exit(f"gpu_check: error: {sys.executable} has no torch; run `make setup` or pass PY=/path/to/venv/bin/python")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: error: CUDA is not available here (torch {torch.__version__}, built for CUDA "
             f"{torch.version.cuda}); this script measures the GPU path and has nothing to run on CPU")
print(f"gpu_check: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
EOF

rm -rf "$WORK"
mkdir -p "$WORK"
began=$(date +%s)

echo "[1/3] corpus: $SPEAKERS speakers x $UTTS clips"
MANIFEST=$("$PY" -c "
from manifests.demo import make_demo_corpus
print(make_demo_corpus('$WORK/data', speakers=$SPEAKERS, utts_per_speaker=$UTTS, progress=False))")

echo "[2/3] face batches on $DEVICE, then extract run ($WORKERS decode workers, $FPS fps, face batch $FACE_BATCH)"
FACE_BENCH=(--device "$DEVICE" --out "$WORK/face_gpu.json")
[ "$DEVICE" = cpu ] && FACE_BENCH+=(--batch 16 --batches 1 --ref-batches 1 --size 96)
"$PY" benchmarks/bench_face_gpu.py "${FACE_BENCH[@]}" | tee "$WORK/face_gpu.log"
CACHE=
RUN=0
for N in $CONSUMERS; do
    RUN=$(( RUN + 1 ))
    # The GPU's utilisation over the extraction, sampled every 200 ms (nothing on a machine without nvidia-smi).
    SAMPLER=
    if [ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$WORK/extract_util_$RUN.csv" &
        SAMPLER=$!
    fi
    # shellcheck disable=SC2086  # FACE_ARGS is a list of flags
    "$PY" -m extract run --manifest "$MANIFEST" --cache-root "$WORK/cache_$RUN" --device "$DEVICE" --face-models shared \
        --face-consumers "$N" --workers "$WORKERS" --fps "$FPS" --face-batch "$FACE_BATCH" --face-weights random \
        $FACE_ARGS --no-progress --strict | tee "$WORK/extract_$RUN.log"
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    [ -n "$CACHE" ] || CACHE=$(tail -n 1 "$WORK/extract_$RUN.log" | awk '{print $NF}')
done

echo "[3/3] teacher and student, $EPOCHS epochs each, $DEVICE + AMP + compile; then the paper-size step"
STEP=(--device "$DEVICE" --steps "$STEP_STEPS" --json "$WORK/train_step.json")
if [ "$DEVICE" = cpu ]; then  # inductor's C++ build takes minutes on CPU: trace only, and a tiny step
    export TORCH_COMPILE_OVERRIDE_BACKENDS=">=0:eager"
    STEP+=(--tiny)
fi
TRAIN=(--epochs "$EPOCHS" --set train.device="$DEVICE" --set 'train.amp="on"' --set 'train.compile="on"'
       --set data.num_workers=4 --quiet)
"$PY" -m distill teacher --cache "$CACHE" --task speaker --setting nonseq --out "$WORK/teacher" "${TRAIN[@]}"
"$PY" -m distill student --cache "$CACHE" --teacher "$WORK/teacher" --method embed --out "$WORK/student" "${TRAIN[@]}"
"$PY" benchmarks/bench_train_step.py "${STEP[@]}" | tee "$WORK/train_step.log"

"$PY" - "$WORK" "$CACHE" "$(( $(date +%s) - began ))" "$CONSUMERS" <<'EOF'
import json
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from extract import open_cache
from extract.info import cache_info

work, cache_dir, total = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
counts = [int(n) for n in sys.argv[4].split()]


def extraction(run: int, n: int) -> dict:
    """Extract run ``run``'s figures (``n`` consumers) from its last line, its cache and its utilisation samples."""
    line = (work / f"extract_{run}.log").read_text().strip().splitlines()[-1]
    extracted, seconds = int(re.search(r"(\d+) extracted", line)[1]), float(re.search(r" in ([\d.]+) s", line)[1])
    first = re.search(r"first (\d+) after ([\d.]+) s", line)
    first_items, first_s = (int(first[1]), float(first[2])) if first else (0, 0.0)
    info = cache_info(line.split()[-1])
    util_file = work / f"extract_util_{run}.csv"
    util = [float(v) for v in util_file.read_text().split() if v.strip()] if util_file.is_file() else []
    return {"consumers": n, "items": extracted, "seconds": seconds, "items_per_s": extracted / seconds,
            "face_frames": info["face_frames"], "face_frames_per_s": info["face_frames"] / seconds,
            "face_found_rate": info["face_found_rate"],
            "gpu_util_mean": sum(util) / len(util) if util else None, "gpu_util_samples": len(util),
            # after the first chunk (start-up: workers spawned, models built): frames in proportion to items
            "after_start_s": seconds - first_s,
            "after_start_face_frames_per_s": info["face_frames"] * (extracted - first_items) / extracted
            / max(seconds - first_s, 1e-9)}


index = open_cache(cache_dir).index
runs = [extraction(run, n) for run, n in enumerate(counts, start=1)]
out = {"extract": runs[0], "extract_by_consumers": runs}
out["face_batches"] = json.loads((work / "face_gpu.json").read_text())
for role in ("teacher", "student"):
    run = work / role
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    log = pd.read_csv(run / "train_log.csv")
    n_train = int((index[cfg["data"].get("split_column", "split")] == "train").sum())
    steps = max(1, n_train // cfg["data"]["batch_size"])
    last = float(log["seconds"].iloc[-1])
    out[role] = {"steps_per_epoch": steps, "last_epoch_s": last, "steps_per_s": steps / last,
                 "metrics": json.loads((run / "metrics.json").read_text())}
bench = json.loads((work / "train_step.json").read_text())
out["paper_step"] = {r["contender"]: r for r in bench["results"]}
out["paper_step_tiny"] = bench["args"]["tiny"] == "True"
out["total_s"] = total
(work / "gpu_check.json").write_text(json.dumps(out, indent=2) + "\n")
print()
for e in runs:
    util = "unmeasured" if e["gpu_util_mean"] is None else f"{e['gpu_util_mean']:.0f} % ({e['gpu_util_samples']} samples)"
    print(f"gpu_check: extraction, --face-consumers {e['consumers']}: {e['face_frames_per_s']:.0f} face frames/s, "
          f"{e['items_per_s']:.1f} items/s ({e['items']} items, {e['face_frames']} face frames, {e['seconds']:.1f} s "
          f"incl. start-up; target >= 5000 frames/s); after start-up ({e['seconds'] - e['after_start_s']:.1f} s) "
          f"{e['after_start_face_frames_per_s']:.0f} face frames/s; GPU utilisation {util} (target >= 50 %)")
for role in ("teacher", "student"):
    r = out[role]
    print(f"gpu_check: {role} {r['steps_per_s']:.1f} steps/s ({r['steps_per_epoch']} steps in {r['last_epoch_s']:.1f} s, "
          "training time of the last epoch; amp + compile)")
step = out["paper_step"]
print(f"gpu_check: {'tiny (smoke) step' if out['paper_step_tiny'] else 'paper-size step'} " + ", ".join(
    f"{name} {r['median_ms']:.1f} ms ({r['items_per_s']:,.0f} items/s)" for name, r in step.items())
    + (f"; compiled/eager {step['compiled']['median_ms'] / step['eager']['median_ms']:.2f}x, "
       f"compile {step['compiled']['first_step_s']:.0f} s" if {"eager", "compiled"} <= set(step) else ""))
print(f"gpu_check: done in {total} s -> {work / 'gpu_check.json'}")
EOF
