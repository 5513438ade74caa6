#!/bin/bash
# One call on a lent GPU machine: train two semantic nets side by side on the one GPU with the phantom
# preset's data and class-balanced patches — A: the preset net (widths 8..64, patch 16x128x128), B: one
# more level and a larger patch (widths 8..128, patch 16x192x192) — in stages of 2,500 iterations that
# resume bit-identically until the deadline; then score both on a fresh-seed phantom (seed 0).
# Usage (with the wheels of .whl on PYTHONPATH and $OUT set): bash tools/device_run2.sh SECONDS
set -u
LIMIT=${1:-400}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
W=/tmp/emkit_dev
mkdir -p $W/A $W/B
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
python3 -m emkit.cli.main phantom $W/eval --size 64,256,256 --seed 0 --quiet > /dev/null &
for s in 101 102 103 104 105 106 199; do
  python3 -c "from emkit.train.presets import prepare_phantoms as p; p('$W/A/data', (64, 384, 384), [$s], progress=False)" &
done
wait
ln -s $W/A/data $W/B/data
echo "phantoms ready at $(el) s"
DEADLINE=$(( T0 + LIMIT - 75 ))
train() {  # NAME EXTRA_ARGS...
  local name=$1; shift
  for N in 2500 5000 7500 10000 12500 15000; do
    local left=$(( DEADLINE - $(date +%s) ))
    [ $left -lt 30 ] && break
    if [ $N -eq 2500 ]; then
      timeout $left python3 -m emkit.cli.main train semantic --preset phantom --device cuda --workers 7 --threads 2 \
        --seed 0 --out $W/$name --no-progress --iterations $N "$@" > $W/$name.out 2>&1
    else
      timeout $left python3 -m emkit.cli.main train semantic --resume --out $W/$name --device cuda --workers 7 \
        --threads 2 --no-progress --iterations $N >> $W/$name.out 2>&1
    fi
    local rc=$?
    echo "$name: stage to $N iterations rc $rc at $(el) s"
    [ $rc -ne 0 ] && break
  done
}
train A &
train B --widths 8,16,32,64,128 --patch 16,192,192 &
wait
for n in A B; do
  cp $W/$n/log.json $OUT/${n}_log.json; cp $W/$n/best.pt $OUT/${n}_best.pt
  python3 -c "
import json; d = json.load(open('$W/$n/log.json'))
print('$n', 'iterations', d['train']['iteration'][-1] if d['train']['iteration'] else 0, 's/it', d.get('seconds_per_iteration'))
print('$n validation', [(v['iteration'], round(v['mean_iou'], 3)) for v in d['validation']])"
  python3 -m emkit.cli.main infer $W/$n/best.pt $W/eval/image $W/eval/sem_$n --workers 0 --device cuda --quiet
  python3 -m emkit.cli.main evaluate --semantic $W/eval/sem_$n $W/eval/gt/image_frame/semantic > $OUT/eval_$n.json
  python3 -c "
import json; d = json.load(open('$OUT/eval_$n.json'))
print('$n fresh seed 0: mean IoU', d['mean_iou'], {k: v['iou'] for k, v in d['per_class'].items()})"
done
tail -3 $W/A.out $W/B.out
echo "done at $(el) s"
