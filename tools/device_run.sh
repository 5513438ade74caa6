#!/bin/bash
# One call on a lent GPU machine (the `device` tool): train the semantic net on the GPU with the
# phantom preset (batches made ahead by forked workers), in stages of 2,500 iterations that
# resume bit-identically while time allows, then the GPU checks of benchmarks/gpu_check.py.
# Needs the wheels of .whl installed on PYTHONPATH (see the call in the session note) and $OUT.
# Usage: bash tools/device_run.sh LIMIT_SECONDS
set -u
LIMIT=${1:-540}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
W=/tmp/emkit_dev
RUN=$W/semantic
mkdir -p "$RUN"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
# 1. the preset's phantoms (64x384x384, seeds 101-106 and validation 199), made in parallel exactly as
#    the trainer makes them (it reuses complete folders)
for s in 101 102 103 104 105 106 199; do
  python3 -c "from emkit.train.presets import prepare_phantoms as p; p('$RUN/data', (64, 384, 384), [$s], progress=False)" &
done
wait
echo "phantoms ready at $(el) s"
# 2. train; keep >= 170 s for the checks
for N in 2500 5000 7500 10000; do
  left=$(( LIMIT - 170 - $(el) ))
  [ $left -lt 60 ] && break
  t=$(date +%s)
  if [ $N -eq 2500 ]; then
    timeout $left python3 -m emkit.cli.main train semantic --preset phantom --device cuda --workers 14 --threads 2 \
      --seed 0 --out $RUN --no-progress --iterations $N
  else
    timeout $left python3 -m emkit.cli.main train semantic --resume --out $RUN --device cuda --workers 14 \
      --threads 2 --no-progress --iterations $N
  fi
  rc=$?
  dt=$(( $(date +%s) - t ))
  echo "train stage to $N iterations: rc $rc in $dt s (elapsed $(el) s)"
  cp $RUN/log.json $OUT/semantic_log.json 2>/dev/null; cp $RUN/best.pt $OUT/semantic_best.pt 2>/dev/null
  [ $rc -ne 0 ] && break
  [ $(( $(el) + dt + 170 )) -gt $LIMIT ] && break
done
python3 - <<'PY'
import json
d = json.load(open("/tmp/emkit_dev/semantic/log.json"))
print("validation:", [(v["iteration"], round(v["mean_iou"], 3)) for v in d["validation"]])
print("best:", d["best"], "s/it:", d.get("seconds_per_iteration"))
PY
# 3. the GPU checks: infer on cuda and cpu, compare, segment + evaluate, plain torch
python3 benchmarks/gpu_check.py --out $OUT --budget $(( LIMIT - 30 - $(el) )) \
  --only info,phantom,infer,compare,segment,torchbench 2>&1 | tee $OUT/gpu_check.log
echo "done at $(el) s"
