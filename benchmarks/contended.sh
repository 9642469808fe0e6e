#!/usr/bin/env bash
# Step times on a shared machine: Mae (Mae.Benchmarks breakdown: forward + backward + AdamW, median
# of 20 steps) and the PyTorch reference step (../shared/peer/mini_mae.py, 2 threads, tuned malloc,
# median of 20 after 3 warm-up steps), for small-32 and tiny-224, quiet and with a busy process
# pinned to core 0, under libgomp's default wait policy (spin) and under OMP_WAIT_POLICY=PASSIVE.
# Run from the repository root after ./build.sh build; needs taskset and /usr/bin/python3 with torch.
set -uo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER:-../shared/peer}
CASES="small-32 tiny-224"

mae_ms() { # prints "case ms; ..." for every case
  dotnet run --project benchmarks/Mae.Benchmarks -c Release --no-build -- breakdown $CASES 2>&1 \
    | awk '/forward/ {printf "%s %.0f ms; ", $1, $3 + $5 + $7}'
}

peer_ms() { # case -> ms per step of the reference
  local img patch width depth heads dec ddepth batch
  case $1 in
    small-32) img=32 patch=4 width=192 depth=6 heads=3 dec=128 ddepth=2 batch=64 ;;
    tiny-224) img=224 patch=16 width=192 depth=12 heads=3 dec=128 ddepth=4 batch=8 ;;
  esac
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296 /usr/bin/python3 - "$PEER" <<PY
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import mini_mae
torch.set_num_threads(2); torch.manual_seed(0)
m = mini_mae.MiniMAE(img_size=$img, patch_size=$patch, in_chans=3, embed_dim=$width, depth=$depth, num_heads=$heads,
                     decoder_embed_dim=$dec, decoder_depth=$ddepth, decoder_num_heads=4, norm_pix_loss=True)
decay = [p for n, p in m.named_parameters() if p.ndim > 1]; rest = [p for n, p in m.named_parameters() if p.ndim <= 1]
opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': rest, 'weight_decay': 0.}], lr=1e-3, betas=(0.9, 0.95))
x = torch.rand($batch, 3, $img, $img); ts = []
for i in range(23):
    t = time.perf_counter(); loss = m(x, 0.75); loss = loss[0] if isinstance(loss, tuple) else loss
    loss.item(); loss.backward(); opt.step(); opt.zero_grad(); ts.append(time.perf_counter() - t)
ts = sorted(ts[3:]); print('%.0f' % (1000 * ts[len(ts) // 2]))
PY
}

measure() { # label
  local line="mae: $(mae_ms)"
  if [ -x /usr/bin/python3 ] && [ -f "$PEER/mini_mae.py" ]; then
    line="$line reference:"
    for c in $CASES; do line="$line $c $(peer_ms "$c") ms;"; done
  fi
  echo "$1  $line"
}

for policy in spin passive; do
  if [ "$policy" = spin ]; then export MAE_BENCH_WAIT=spin; unset OMP_WAIT_POLICY
  else unset MAE_BENCH_WAIT; export OMP_WAIT_POLICY=PASSIVE; fi
  measure "quiet     $policy"
  taskset -c 0 sh -c 'while :; do :; done' &
  busy=$!
  sleep 1
  measure "contended $policy"
  kill "$busy"; wait "$busy" 2>/dev/null
done
