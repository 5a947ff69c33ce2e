"""Screenshot of the MLflow UI's training-runs table with a sweep's parent expanded.

How docs/img/sweep-ui.png was made: Debian's `chromium`, driven by Playwright (which
only drives it; no browser download): `pip install playwright`, then
`python scripts/ui_screenshot.py http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning out.png`
with `make ui` running over a store that holds a sweep.
"""

import sys

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


def main(url: str, out: str, parent_prefix: str = "sweep ") -> None:
    """Open ``url``, expand the first sweep parent, close the assistant panel, save ``out``."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 820})
        page.goto(url)
        page.wait_for_timeout(8000)
        cell = page.locator("[col-id='attributes.`Run Name`']").filter(has_text=parent_prefix)
        cell.first.locator("button, [role='button']").first.click(timeout=5000)
        page.wait_for_timeout(3000)
        try:
            page.get_by_role("button", name="Close").last.click(timeout=2000)
        except Exception:  # noqa: BLE001 - the assistant panel is not always open
            pass
        page.wait_for_timeout(1500)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
