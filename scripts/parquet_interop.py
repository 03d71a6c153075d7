#!/usr/bin/env python3
"""Checks that the Parquet files crypy writes are read by pandas (pyarrow engine) and polars.

Usage: parquet_interop.py PATH/TO/crypy

Imports the bundled Kraken quarter into a fresh data dir, trades it once, exports its events
(`crypy log export --parquet`) and its candles (`crypy data export-candles --parquet`), reads
both files with pandas and polars, and checks shapes, types and values against what crypy
printed. Exits non-zero on the first mismatch. `.ci/run` runs it in a virtualenv that has
pandas, pyarrow and polars.
"""

import decimal
import json
import os
import subprocess
import sys
import tempfile

import pandas as pd
import polars as pl
import pyarrow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUARTER = os.path.join(ROOT, "replays", "kraken_XBTEUR_15m_2023Q4.csv")


def crypy(binary, data_dir, *args):
    out = subprocess.run([binary, *args, "--data-dir", data_dir], check=True, capture_output=True, text=True)
    return out.stdout


def check(condition, what):
    if not condition:
        sys.exit(f"parquet interop: {what}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        crypy(binary, data, "log", "import-candles", "--pair", "XBT/EUR", "--interval", "15m", QUARTER)
        summary = json.loads(crypy(binary, data, "sim", "--from-log", "--json").strip().splitlines()[-1])
        events_file = os.path.join(tmp, "events.parquet")
        candles_file = os.path.join(tmp, "candles.parquet")
        crypy(binary, data, "log", "export", "--parquet", events_file)
        crypy(binary, data, "data", "export-candles", "--parquet", candles_file)

        total = 8832 + summary["events"]
        for name, frame in [
            ("pandas", pd.read_parquet(events_file, engine="pyarrow")),
            ("polars", pl.read_parquet(events_file).to_pandas()),
        ]:
            check(len(frame) == total, f"{name} read {len(frame)} events, crypy wrote {total}")
            check(list(frame.columns) == ["seq", "run", "time", "wall", "source", "kind", "cause", "data"],
                  f"{name} columns {list(frame.columns)}")
            check(frame["seq"].iloc[0] == 1 and frame["seq"].iloc[-1] == total, f"{name} seqs")
            check(str(frame["time"].dt.tz) == "UTC", f"{name} time zone {frame['time'].dt.tz}")
            orders = frame[frame["kind"] == "order_requested"]
            check(len(orders) == summary["orders"], f"{name} found {len(orders)} orders, crypy made {summary['orders']}")
            first = json.loads(frame["data"].iloc[0])
            check(first["close"] == "25526.7", f"{name} first candle {first}")

        pdf = pd.read_parquet(candles_file, engine="pyarrow")
        check(len(pdf) == 8832, f"pandas read {len(pdf)} candles")
        check(pdf["close"].iloc[0] == decimal.Decimal("25526.7"), f"pandas close {pdf['close'].iloc[0]!r}")
        check(pdf["volume"].iloc[0] == decimal.Decimal("1.37303653"), f"pandas volume {pdf['volume'].iloc[0]!r}")
        check(str(pdf["ts"].iloc[0]) == "2023-10-01 00:00:00+00:00", f"pandas ts {pdf['ts'].iloc[0]}")
        check(pdf["pair"].unique().tolist() == ["XBT/EUR"], "pandas pairs")
        pldf = pl.read_parquet(candles_file)
        check(pldf.height == 8832, f"polars read {pldf.height} candles")
        check(str(pldf.schema["close"]).startswith("Decimal"), f"polars close type {pldf.schema['close']}")
        check(pldf["close"][0] == decimal.Decimal("25526.7"), f"polars close {pldf['close'][0]!r}")
        check(pldf["trades"][0] == 98, f"polars trades {pldf['trades'][0]}")
        print(
            f"pandas {pd.__version__}, polars {pl.__version__} and pyarrow {pyarrow.__version__} read "
            f"{total} events and 8832 candles as crypy wrote them"
        )


if __name__ == "__main__":
    main()
