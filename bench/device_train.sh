#!/usr/bin/env bash
# One device call: train several runs side by side on one GPU and bring back their fp16
# weights, summaries and logs (docs/PERFORMANCE.md gives the figures each session measured).
#
#   bash bench/device_train.sh STOP_MINUTES 'NAME|DATA|STEPS|OVERRIDES_JSON[|PRESET]' ...
#
# PRESET defaults to fast.
#
# Carry `.whl` (pip download of what the device lacks: pydantic, librosa and their needs)
# and `.gpudata` (DATA.tar.xz from `python -m bench.carry pack`). PyAV's wheel alone is
# larger than a call can carry, and training never decodes media, so a stand-in module
# satisfies the imports there. RESUME=1 continues each run from its newest checkpoint in
# .gpuwork (kept between calls while the machine stays warm).
set -u
STOP_MINUTES=$1
shift
OUT=${OUT:?}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/av
echo '"""Stand-in for PyAV on the device: training never decodes media."""' \
    >/tmp/site/av/__init__.py
printf 'InputContainer = object\nOutputContainer = object\n' >/tmp/site/av/container.py
export PYTHONPATH=/tmp/site:$PWD/shared:$PWD PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=$((16 / $#))

for spec in "$@"; do
    data=$(cut -d'|' -f2 <<<"$spec")
    [ -d ".gpuwork/$data" ] || python3 -m bench.carry unpack ".gpudata/$data.tar.xz" ".gpuwork/$data"
done

resume=()
if [ "${RESUME:-0}" = 1 ]; then
    # a fresh machine has no .gpuwork: starting over would spend the call on steps already run
    [ -d .gpuwork/runs ] || { echo "RESUME=1 but no .gpuwork/runs here: the machine is new"; exit 9; }
    resume=(--resume)
fi
for spec in "$@"; do
    IFS='|' read -r name data steps overrides preset <<<"$spec"
    [ -n "$overrides" ] || overrides='{}'
    python3 -m bench.gpu_train ".gpuwork/$data" "$OUT" --preset "${preset:-fast}" --name "$name" \
        --steps "$steps" --work .gpuwork/runs --overrides "$overrides" \
        --no-held-out-eval --stop-after "$STOP_MINUTES" "${resume[@]}" \
        >"$OUT/log_$name.txt" 2>&1 &
done
wait
tail -n 3 "$OUT"/log_*.txt
tar czf "$OUT/logs.tgz" .gpuwork/runs/*/run/metrics.jsonl 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv
