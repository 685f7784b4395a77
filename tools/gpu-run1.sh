#!/bin/sh
B=build; O=${OUT:-/tmp/out}; mkdir -p $O
export LD_LIBRARY_PATH=$PWD/.device-libs/lib:$PWD/$B/src/agent:${LD_LIBRARY_PATH:-}
for t in rowptr buckets fault accuracy; do timeout 200 $B/tests/cuda/test_cuda_$t > $O/$t.log 2>&1; echo "$t rc=$?"; done
grep -E "runs 1\)|FAIL" $O/rowptr.log | head -4
run() { # name, env...
  n=$1; shift
  env "$@" OAG_PROFILE_FILE=$O/prof_$n.txt timeout 200 $B/tools/oag-bench --gen-models --backend cuda --models-dir /tmp/m --batches 512 --skip latency,sync,batching $BX > $O/bench_$n.txt 2>$O/bench_$n.err
  echo "=== $n"; grep -E "agents \(window|^ +512|PASS|MISS" $O/bench_$n.txt; cut -c1-150 $O/prof_$n.txt
}
run flat A=1
run copy OAG_CUDA_ROWS_BY_PTR=0
run flat2 A=1
