#!/usr/bin/env python3
"""vectorbt's own results for the SMA-crossover sweep, as a JSON fixture for crypy's tests.

Runs the sweep of ../shared/bench/vectorbt_sweep.py (fast SMA 5..50 step 5, slow SMA
20..200 step 20, only fast < slow: 90 combinations; long-only; entries =
fast_ma.ma_crossed_above(slow_ma), exits = fast_ma.ma_crossed_below(slow_ma);
Portfolio.from_signals(close, entries, exits, fees=0.0026, init_cash=100.0,
freq="1min"), everything else vectorbt's defaults) on one CSV, and writes per
combination its total_return() (full repr precision) and its order count
(pf.orders.count()).

It also records the `next_open` variant crypy's sweep offers: the same signals
executed one bar later at that bar's open, i.e.
Portfolio.from_signals(close, entries shifted by one bar, exits shifted by one
bar, price=open, ...), still valued at the last close.

Written against vectorbt 1.2.0 (numba engine, as the peer script's default;
numpy 2.4, pandas 3.0, numba 0.68). Run it in the peer benchmark venv (see
../shared/bench/README.md), from the repository root:

    /tmp/peerbench-venv/bin/python bench/vectorbt_fixture.py \
        --csv replays/kraken_XBTEUR_15m_2023Q4.csv \
        --out crates/agents/tests/fixtures/vectorbt_sweep_kraken_xbteur_15m.json

The CSV needs a header with `open` and `close` columns (Kraken's
`time,open,high,low,close,volume,count` or the peer scripts'
`ts,open,high,low,close,volume`); `--bars N` keeps the first N rows. Prices are
parsed with Python's float(), correctly rounded as Rust's `str::parse::<f64>` is,
so both sides start from the same doubles; the script says so if pandas'
read_csv (what the peer script uses) would have read any price differently.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

FEES = 0.0026
INIT_CASH = 100.0
FAST = list(range(5, 51, 5))
SLOW = list(range(20, 201, 20))


def run(vbt, pd, close, open_, next_open: bool):
    """One sweep; returns [(fast, slow, total_return, orders)] in vectorbt's column order."""
    pairs = [(f, s) for s in SLOW for f in FAST if f < s]
    fast_ma = vbt.MA.run(close, window=[p[0] for p in pairs], short_name="fast")
    slow_ma = vbt.MA.run(close, window=[p[1] for p in pairs], short_name="slow")
    entries = fast_ma.ma_crossed_above(slow_ma)
    exits = fast_ma.ma_crossed_below(slow_ma)
    kw = {}
    if next_open:
        entries = entries.shift(1, fill_value=False)
        exits = exits.shift(1, fill_value=False)
        kw["price"] = open_
    pf = vbt.Portfolio.from_signals(close, entries, exits, fees=FEES, init_cash=INIT_CASH, freq="1min", **kw)
    tr = pf.total_return()
    orders = pf.orders.count()
    out = []
    for (f, s), col in zip(pairs, tr.index):
        if tuple(int(x) for x in col) != (f, s):
            raise SystemExit(f"unexpected column order: {col} for {(f, s)}")
        out.append({"fast": f, "slow": s, "total_return": float(tr[col]), "orders": int(orders[col])})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", required=True, help="CSV with a header naming open and close columns")
    p.add_argument("--bars", type=int, default=None, help="keep only the first N rows")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--no-next-open", action="store_true", help="skip the next-open variant")
    a = p.parse_args(argv)

    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    vbt.settings["engine"] = "numba"
    with open(a.csv, newline="") as f:
        rows = list(csv.DictReader(f))[: a.bars]
    cols = {c: np.array([float(r[c]) for r in rows], dtype="float64") for c in ("open", "close")}
    pandas_df = pd.read_csv(a.csv, nrows=a.bars)
    for c, v in cols.items():
        if not np.array_equal(v, pandas_df[c].to_numpy(dtype="float64")):
            print(f"note: pandas' read_csv reads some {c} prices differently", file=sys.stderr)
    idx = pd.RangeIndex(len(rows))
    close = pd.Series(cols["close"], index=idx, name="close")
    open_ = pd.Series(cols["open"], index=idx, name="open")

    t = time.perf_counter()
    fill_close = run(vbt, pd, close, open_, next_open=False)
    seconds = time.perf_counter() - t
    doc = {
        "generator": "bench/vectorbt_fixture.py",
        "vectorbt": vbt.__version__,
        "engine": "numba",
        "source": os.path.basename(a.csv),
        "bars": len(close),
        "fees": FEES,
        "init_cash": INIT_CASH,
        "order": "slow outer, fast inner, fast < slow",
        "close": fill_close,
    }
    if not a.no_next_open:
        doc["next_open"] = run(vbt, pd, close, open_, next_open=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(json.dumps({"out": a.out, "bars": len(close), "combinations": len(fill_close),
                      "first_sweep_seconds_incl_jit": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
