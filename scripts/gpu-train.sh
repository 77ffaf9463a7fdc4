#!/usr/bin/env bash
# One timed training run on a borrowed GPU machine that cannot reach the Debian mirrors: the procedure of the
# default model's GPU steps (models/MODEL_CARD.md, Training, steps 5 to 7; a resumed budget run restarts its
# schedule at LR, which those runs did not). Two halves:
#
#   scripts/gpu-train.sh pack DIR     # here: the voice packs' clips and dialog scripts as three archives in DIR
#                                     # (cs.tar 47 MB, nl.tar 40 MB, script.tar.xz 0.6 MB, from data/fillets/tree,
#                                     # which `wavenet-prepare` fetches), small enough to travel in two uploads
#   scripts/gpu-train.sh train DIR OUT   # there: unpack, prepare the data (the same wavenet-prepare), resume
#                                     # models/train-state/checkpoint.pt, train until LIMIT seconds after the start,
#                                     # leave checkpoint.pt, loss.png and the logs in OUT
#
# train: the same code on the same packages makes the same data (the split lists are committed). The run is a new
# schedule fitted to the time left (--budget-minutes), compiled (torch.compile: 1.7x the eager run's samples per minute
# on an H200); if compiling has not finished its probe by PROBE seconds, it starts again eager. Environment: LIMIT
# (seconds, default 540), PROBE (170), PY (python3), DEVICE (cuda), BATCH (32), LR (the peak, 3e-4: see MODEL_CARD.md,
# "A correction"), WORKERS (16), WORK (/tmp/wavenet-gpu).
# Where python3 lacks soundfile and soxr, put their wheels in DIR/whl (pip download --only-binary=:all: ...).
# Afterwards, here: copy OUT/checkpoint.pt to runs/default/, compare raw and EMA validation (wavenet-train evaluate),
# export the better, bench/quality.py.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}; dir=${2:-}
[ -n "$dir" ] || { sed -n 2,20p "$0"; exit 2; }

if [ "$mode" = pack ]; then
  tree=data/fillets/tree
  [ -d $tree/usr/share/games/fillets-ng/sound ] || { echo "no $tree: run wavenet-prepare first"; exit 1; }
  mkdir -p "$dir"
  for lang in cs nl; do
    (cd $tree && find usr/share/games/fillets-ng/sound -path "*/$lang/*" -print0 | tar -cf - --null -T -) > "$dir/$lang.tar"
  done
  tar -C $tree -cJf "$dir/script.tar.xz" usr/share/games/fillets-ng/script
  ls -la "$dir"
  exit 0
fi
[ "$mode" = train ] || { echo "usage: $0 pack DIR | train DIR OUT"; exit 2; }

out=${3:?OUT folder}
T0=$(date +%s)
LIMIT=${LIMIT:-540} PROBE=${PROBE:-170} PY=${PY:-python3} WORK=${WORK:-/tmp/wavenet-gpu}
mkdir -p "$out" "$WORK/tree"
if [ -d "$dir/whl" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$dir"/whl/*.whl || exit 1
  export PYTHONPATH="$WORK/site"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
for archive in "$dir/cs.tar" "$dir/nl.tar" "$dir/script.tar.xz"; do tar -C "$WORK/tree" -xf "$archive" || exit 1; done
$PY -m models.data --tree "$WORK/tree" --out "$WORK/data" --workers "${WORKERS:-16}" > "$out/prepare.log" 2>&1 \
  || { tail -20 "$out/prepare.log"; exit 1; }
tail -9 "$out/prepare.log"
rm -rf "$WORK/run" && mkdir -p "$WORK/run" && cp models/train-state/checkpoint.pt "$WORK/run/"

train() {  # $1: --compile or --no-compile; stops LIMIT - 30 s after the start
  local left=$(( LIMIT - 30 - ($(date +%s) - T0) ))
  echo "train $1: $left s"
  timeout -s INT $(( left + 20 )) $PY -m models.train --data "$WORK/data" --out "$WORK/run" --device "${DEVICE:-cuda}" --bf16 \
    --batch-size "${BATCH:-32}" --lr "${LR:-3e-4}" --lr-min 1e-5 --prefetch 6 \
    --budget-minutes "$($PY -c "print(round($left / 60, 2))")" "$1" >> "$out/train.log" 2>&1 &
  PID=$!
}

train --compile
until grep -qs "^budget:" "$out/train.log"; do
  sleep 5
  if ! kill -0 $PID 2>/dev/null || [ $(( $(date +%s) - T0 )) -gt "$PROBE" ]; then
    echo "the compiled run did not finish its probe by $PROBE s: eager instead"
    kill -9 $PID 2>/dev/null; pkill -9 -f "models.train --data $WORK/data"; wait $PID; sleep 2
    train --no-compile
    break
  fi
done
wait $PID
grep "^budget:" "$out/train.log"
tr '\r' '\n' < "$out/train.log" | grep -v '^ *$' | tail -3
cp "$WORK/run/checkpoint.pt" "$WORK/run/loss.png" "$out/"
echo "done after $(( $(date +%s) - T0 )) s"
