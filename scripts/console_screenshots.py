"""Screenshots of the console for the README (docs/console-*.png), taken from a running
`make cluster` with Debian's chromium: `.venv/bin/python scripts/console_screenshots.py JOB_ID`.

Run the README's quick start first (or any job), so the pages have something to show.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job_id", help="the job whose page to show")
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="a node of the cluster")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    shots = {"console-cluster.png": "#/cluster", "console-job.png": f"#/jobs/{args.job_id}"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            for name, fragment in shots.items():
                page.goto(f"{args.url}/ui/{fragment}")
                page.wait_for_timeout(4000)  # a few live updates
                page.screenshot(path=str(ROOT / "docs" / name))
                print(f"docs/{name}")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
