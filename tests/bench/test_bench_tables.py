#!/usr/bin/env python3
"""Smoke test of `oag-bench table N` (N = 1..7) with tiny sizes on the cpu backend: each table
runs, exits 0, prints its human table, and writes a well-formed JSON document whose figures are
present and positive. No timing targets (those live in the benchmark itself).
Exit 0 pass, 1 fail, 77 skip (oag-bench not built)."""
import json
import math
import os
import subprocess
import sys
import tempfile

BENCH = os.environ.get("OAG_BENCH", "")
GEN = os.environ.get("OAG_GEN_MODEL", "")
POSITIVE = {
    1: ["load_s", "peak_rss_mb"],
    2: ["batch", "batch_us", "batch_alone_us", "item_us", "items_s"],
    3: ["tasks_s", "mean_us", "p50_us", "p99_us"],
    4: ["tasks_s", "mean_us", "p50_us", "p99_us", "avg_batch"],
    5: ["tasks_s", "mean_us", "p50_us", "p99_us"],
    6: ["tasks_s", "p50_us", "p99_us", "in_flight"],
    7: ["tasks_s", "p50_us", "p90_us", "p99_us", "in_flight"],
}
SYSTEMS = {1: {"baseline", "oag"}, 2: {"oag-engine"}, 3: {"sync", "pipelined"},
           4: {"none", "dynamic"}, 5: {"oag", "rpc"}, 6: {"oag", "rpc"}, 7: {"oag", "rpc"}}
ROWS = {1: 4, 2: 3, 3: 3, 4: 2, 5: 5, 6: 4, 7: 4}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def main():
    if not (BENCH and os.access(BENCH, os.X_OK) and GEN and os.access(GEN, os.X_OK)):
        print("SKIP: oag-bench or oag-gen-model not built")
        return 77
    # bad input: a clear error and exit status 2, nothing run
    for bad in (["table", "9"], ["table"], ["table", "3", "--ramp", "x"], ["--table", "0"]):
        p = subprocess.run([BENCH] + bad, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        if p.returncode != 2 or "oag-bench:" not in p.stderr:
            fail(f"oag-bench {' '.join(bad)}: exit {p.returncode}, stderr {p.stderr[:200]!r}")
    with tempfile.TemporaryDirectory(prefix="oag-bench-test-") as tmp:
        model = os.path.join(tmp, "tiny")
        subprocess.run([GEN, "--out", model, "--input", "32", "--hidden", "64", "--output", "16",
                        "--layers", "2"], check=True, stdout=subprocess.DEVNULL)
        common = ["--model", model, "--backend", "cpu", "--threads", "1", "--batches", "1,8,32",
                  "--max-batch", "64", "--e2e-batch", "32", "--offline-iters", "10",
                  "--offline-max-s", "0.05", "--model-duration", "0.2", "--model-warmup", "0.05",
                  "--cmp-agents", "2", "--model-samples", "20000"]
        extra = {
            1: ["--load-mb", "4", "--load-dtype", "float16"],
            5: ["--scale-agents", "1,2", "--iters", "2000"],
            6: ["--ramp", "2,8", "--ramp-agents", "2", "--ramp-queue", "64"],
            7: ["--sweep", "1,4", "--sweep-agents", "2", "--sweep-window", "0.05",
                "--sweep-max-windows", "4"],
        }
        for n in range(1, 8):
            out = os.path.join(tmp, f"t{n}.json")
            args = [BENCH, "table", str(n)]
            # table 1 generates its own model: --model would make it load the tiny one instead
            args += (common[2:] if n == 1 else common) + extra.get(n, []) + ["--json", out]
            p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=120)
            if p.returncode != 0:
                print(p.stdout)
                print(p.stderr[-4000:])
                fail(f"table {n}: exit status {p.returncode}")
            if f"Table {n}." not in p.stdout or "guide" not in p.stdout:
                print(p.stdout)
                fail(f"table {n}: no human table with the guide's figures on stdout")
            try:
                doc = json.load(open(out))
            except (OSError, ValueError) as e:
                fail(f"table {n}: {out}: {e}")
            if doc.get("table") != n or doc.get("failures") != 0:
                fail(f"table {n}: table/failures fields wrong: {doc.get('table')}, "
                     f"{doc.get('failures')}")
            for key in ("title", "machine", "backend", "guide", "rows"):
                if key not in doc:
                    fail(f"table {n}: no '{key}' in the JSON")
            rows = doc["rows"]
            if len(rows) < ROWS[n]:
                fail(f"table {n}: {len(rows)} rows, expected at least {ROWS[n]}")
            if n in (3, 4):
                # the host's CPU use over each agent row (tick-based: may be 0 in a short row)
                busy = 0
                for r in rows:
                    hc, ct = r.get("host_cpus"), r.get("cpu_us_per_task")
                    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                               for v in (hc, ct)) or hc > (os.cpu_count() or 1) * 1.05:
                        fail(f"table {n}: row {r.get('label')}: host_cpus {hc}, "
                             f"cpu_us_per_task {ct}")
                    busy += hc > 0
                    # the busiest data thread's working share, from the supervisor's status
                    tb = r.get("data_thread_busy_max_pct")
                    if not (isinstance(tb, (int, float)) and math.isfinite(tb)
                            and 0 <= tb <= 105):
                        fail(f"table {n}: row {r.get('label')}: data_thread_busy_max_pct {tb}")
                if not busy:
                    fail(f"table {n}: no row saw the host's CPUs busy")
            systems = {r.get("system") for r in rows}
            if not SYSTEMS[n] <= systems:
                fail(f"table {n}: systems {systems}, expected {SYSTEMS[n]}")
            for r in rows:
                if r.get("ok") is not True:
                    fail(f"table {n}: row {r.get('label')} not ok")
                keys = ["p50_us", "p99_us"] if r.get("system", "").startswith("transport") \
                    else POSITIVE[n]
                for k in keys:
                    v = r.get(k)
                    if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                        fail(f"table {n}: row {r.get('system')} {r.get('label')}: {k} = {v}")
                er = r.get("error_rate", 0)
                if not (isinstance(er, (int, float)) and 0 <= er <= 1):
                    fail(f"table {n}: error_rate {er}")
                if r.get("mismatches", 0):
                    fail(f"table {n}: {r['mismatches']} results differ from the engine's")
                if n == 7 and len(r.get("windows", [])) < 3:
                    fail(f"table 7: row {r.get('label')}: fewer than 3 windows")
            print(f"table {n}: ok ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
