#!/usr/bin/env bash
# crypy's benchmarks next to the peers', in one run on one machine, on the same data.
#
#   bash bench/side_by_side.sh [OUTDIR]        (default /tmp/crypy-side-by-side)
#   BARS=100000 bash bench/side_by_side.sh     (a quicker pass)
#   PEERS=0 bash bench/side_by_side.sh         (crypy only, on data.py's series)
#
# First the peers (../shared/bench/run_all.sh: vectorbt, nautilus_trader, backtesting.py, the
# disk's append limit; their venvs as its README says), then crypy's figures on the very CSV the
# peers read, each step waiting for a quiet machine as run_all.sh does. One JSON line per step
# in OUTDIR; /usr/bin/time's wall seconds and peak RSS (KiB) in NAME.time.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
OUT="${1:-/tmp/crypy-side-by-side}"
BARS="${BARS:-525600}"
QUIET_WAIT="${QUIET_WAIT:-300}"
VENV="${VENV:-/tmp/peerbench-venv}"
CSV="/tmp/peerbench/bars_${BARS}_seed42.csv"
CRYPY="$ROOT/target/release/crypy"
mkdir -p "$OUT"

(cd "$ROOT" && cargo build --release --locked) || exit 1
if [ "${PEERS:-1}" = 1 ]; then
  QUIET_WAIT="$QUIET_WAIT" BARS="$BARS" bash "$SHARED/run_all.sh" "$OUT"
fi
[ -f "$CSV" ] || "$VENV/bin/python" "$SHARED/data.py" --bars "$BARS" >/dev/null || exit 1

wait_quiet() {
  local waited=0
  while [ "$waited" -lt "$QUIET_WAIT" ]; do
    awk '{exit !($1 < 0.7)}' /proc/loadavg && return 0
    sleep 10; waited=$((waited + 10))
  done
  echo "warning: machine still busy after ${QUIET_WAIT}s: $(cat /proc/loadavg)" >&2
}

# step NAME ARGS... — one crypy command, its JSON line, time and load around it
step() {
  local name="$1"; shift
  wait_quiet
  local before; before="$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "== $name: crypy $*" >&2
  /usr/bin/time -f '%e %M' -o "$OUT/$name.time" "$CRYPY" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"
  echo $? >"$OUT/$name.rc"
  echo "$before|$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/$name.load"
  tail -n1 "$OUT/$name.json" >&2
}

echo "crypy=$(git -C "$ROOT" rev-parse --short HEAD) $(rustc --version)" >>"$OUT/env.txt"
rm -rf "$OUT/crypy-backtest-data"

for i in 1 2 3; do step "crypy_log_$i" bench log --events 1000000 --json; done
step crypy_sweep          bench sweep --csv "$CSV" --fast 5:50:5 --slow 20:200:20 --fees 0.0026 --fill close --json
step crypy_sweep_1thread  bench sweep --csv "$CSV" --fast 5:50:5 --slow 20:200:20 --fees 0.0026 --threads 1 --json
step crypy_sweep_nextopen bench sweep --csv "$CSV" --fast 5:50:5 --slow 20:200:20 --fees 0.0026 --fill next-open --json
step crypy_sweep_360      bench sweep --csv "$CSV" --fast 5:50:5 --slow 20:200:5 --fees 0.0026 --json
step crypy_backtest       bench backtest --csv "$CSV" --strategy sma:10:30 --qty 0.01 --data-dir "$OUT/crypy-backtest-data" --json
step crypy_replay_1       bench replay --data-dir "$OUT/crypy-backtest-data" --workers 1 --json
step crypy_replay_2       bench replay --data-dir "$OUT/crypy-backtest-data" --workers 2 --json
step crypy_latency        bench latency --csv "$CSV" --bars 100000 --json
rm -rf "$OUT/crypy-backtest-data"
echo "results in $OUT" >&2
