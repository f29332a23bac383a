"""Take a PNG screenshot of an HTML report with headless Chromium (for the README).

    python scripts/screenshot_report.py REPORT.html OUT.png [--width 1280] [--height 3000]

Chromium runs with networking off (a dead proxy) and a throw-away profile; the virtual
time budget lets the report's charts finish drawing before the picture is taken. Set
CHROMIUM to use a browser that is not on PATH as `chromium`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), *BROWSERS):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    sys.exit("screenshot_report: no Chromium found; install it (apt-get install chromium) or set CHROMIUM")


def screenshot(report: Path, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ami-shot-") as profile:
        command = [
            find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--proxy-server=127.0.0.1:9", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "--virtual-time-budget=15000",
            f"--screenshot={out.resolve()}", report.resolve().as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not out.is_file():
        sys.exit(f"screenshot_report: Chromium wrote no {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"{args.report}: no such file")
    screenshot(args.report, args.out, args.width, args.height)
    print(args.out)


if __name__ == "__main__":
    main()
