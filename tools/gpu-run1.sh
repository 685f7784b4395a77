#!/bin/sh
B=build; O=${OUT:-/tmp/out}; mkdir -p $O /tmp/s
export LD_LIBRARY_PATH=$PWD/.device-libs/lib:$PWD/$B/src/agent:${LD_LIBRARY_PATH:-}
timeout 400 tools/bench-suite build /tmp/s all > /tmp/s/suite.log 2>&1
tar czf $O/suite.tgz -C /tmp/s . 
cat /tmp/s/status.txt
run() { # name, env...
  n=$1; shift
  env "$@" OAG_PROFILE_FILE=/tmp/s/prof_$n.txt timeout 90 $B/tools/oag-bench --gen-models --backend cuda --models-dir /tmp/oag-models --batches 512 --skip latency,sync,batching > /tmp/s/ab_$n.txt 2>&1
  echo "=== $n"; grep -E "agents \(window|^ +512|results" /tmp/s/ab_$n.txt; cut -c1-160 /tmp/s/prof_$n.txt
}
run ptr A=1
run copy OAG_CUDA_ROWS_BY_PTR=0
tar czf $O/ab.tgz -C /tmp/s ab_ptr.txt ab_copy.txt prof_ptr.txt prof_copy.txt
