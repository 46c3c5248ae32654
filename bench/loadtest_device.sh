#!/usr/bin/env bash
# The server's load test on the GPU machine with the batch loop's lookahead on and off, in ONE call
# (carry [".device"]): a random 134M LLaMA-style model (--init medium), f16; 64 clients on 32 slots
# (dense and sparse), and one client on one slot (dense), alternating on / off. Results:
# $OUT/loadtest.txt and one JSON per run.
set -uo pipefail
OUT=${OUT:-/tmp/loadtest_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
LT="deno run -A --no-check bench/loadtest.ts --init medium --device cuda --dtype f16 --timeout 60"
for round in 1 2; do
  for la in lookahead no-lookahead; do
    echo "== round $round --$la" | tee -a "$OUT/loadtest.txt"
    timeout 100 $LT --compare --clients 64 --requests 256 --max-tokens 48 --max-batch 32 --$la \
      --out "$OUT/batch32_${la}_$round.json" 2>&1 | grep -E "tok/s|failed req" | tee -a "$OUT/loadtest.txt"
    timeout 100 $LT --dense --clients 1 --requests 6 --max-tokens 128 --max-batch 1 --$la \
      --out "$OUT/single_${la}_$round.json" 2>&1 | grep -E "tok/s|failed req" | tee -a "$OUT/loadtest.txt"
  done
done
