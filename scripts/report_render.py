#!/usr/bin/env python3
"""Checks that a browser renders `crypy report`'s HTML: headless Chromium, no network.

Usage: report_render.py PATH/TO/crypy PATH/TO/chromium-headless-shell

Trades the bundled quarter once, writes its report, has headless Chromium load it (with the
network cut off) and dump its DOM and a screenshot, and checks that the charts are there and
that something was drawn. `.ci/run` runs it.
"""

import os
import subprocess
import sys
import tempfile


def check(condition, what):
    if not condition:
        sys.exit(f"report render: {what}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    crypy, chromium = os.path.abspath(sys.argv[1]), sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        subprocess.run([crypy, "sim", "--quiet", "--data-dir", data], check=True, capture_output=True)
        report = os.path.join(tmp, "report.html")
        subprocess.run([crypy, "report", "--data-dir", data, "--out", report], check=True, capture_output=True)
        browser = [
            chromium, "--no-sandbox", "--disable-gpu", "--headless",
            # Nothing may be fetched: a report must open offline.
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
            "--window-size=1100,2400",
        ]
        dom = subprocess.run(browser + ["--dump-dom", "file://" + report], check=True, capture_output=True, text=True).stdout
        check(dom.count("<svg") == 4, f"{dom.count('<svg')} charts in the rendered page, expected 4")
        check(dom.count("<polyline") == 3, "price, equity and drawdown lines")
        check("crypy report: run 1" in dom, "the title")
        shot = os.path.join(tmp, "report.png")
        subprocess.run(browser + [f"--screenshot={shot}", "file://" + report], check=True, capture_output=True)
        with open(shot, "rb") as f:
            png = f.read()
        check(png.startswith(b"\x89PNG") and len(png) > 20_000, f"a screenshot of {len(png)} bytes")
        version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"{version or 'headless Chromium'} rendered the report: 4 charts, a {len(png):,}-byte screenshot")

        # `crypy learn`'s report of its folds, the same way.
        learned = os.path.join(tmp, "learned")
        market = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "replays", "kraken_XBTEUR_15m_2023Q4.csv")
        subprocess.run([crypy, "learn", "--folds", "2", "--json", "--out", learned, "--market", market],
                       check=True, capture_output=True)
        report = os.path.join(learned, "learning", "report.html")
        dom = subprocess.run(browser + ["--dump-dom", "file://" + report], check=True, capture_output=True, text=True).stdout
        charts = dom.count('<svg class="chart"')
        check(charts == 3, f"{charts} charts in the learning report, expected 3 (fold returns, two equity curves)")
        check(dom.count('<tr class="fold">') == 2, "one row per fold")
        shot = os.path.join(tmp, "learn.png")
        subprocess.run(browser + [f"--screenshot={shot}", "file://" + report], check=True, capture_output=True)
        with open(shot, "rb") as f:
            png = f.read()
        check(png.startswith(b"\x89PNG") and len(png) > 20_000, f"a learning screenshot of {len(png)} bytes")
        print(f"and the learning report: 3 charts, 2 folds, a {len(png):,}-byte screenshot")


if __name__ == "__main__":
    main()
