#!/bin/sh
B=build; O=${OUT:-/tmp/out}; mkdir -p $O
export LD_LIBRARY_PATH=$PWD/.device-libs/lib:$PWD/$B/src/agent:${LD_LIBRARY_PATH:-}
timeout 120 $B/tests/cuda/test_cuda_rowptr > $O/rowptr.log 2>&1; echo "rowptr rc=$?"; grep -E "runs|ok|FAIL" $O/rowptr.log | tail -8
run() { # name, env...
  n=$1; shift
  env "$@" OAG_PROFILE_FILE=$O/prof_$n.txt timeout 200 $B/tools/oag-bench --gen-models --backend cuda --models-dir /tmp/m --batches 512 --skip latency,sync,batching $BX > $O/bench_$n.txt 2>$O/bench_$n.err
  echo "=== $n"; grep -E "agents \(window|^ +512" $O/bench_$n.txt; cut -c1-200 $O/prof_$n.txt
}
run runs A=1
run kernel OAG_CUDA_RUN_BYTES=1000000000
BX="--model-window 64 --e2e-agents 64" run runs_w64 A=1
BX="--model-window 16 --e2e-agents 512" run runs_w16 A=1
