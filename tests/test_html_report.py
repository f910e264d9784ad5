"""The HTML report in a real browser: Debian's chromium driven by playwright, the page served over HTTP from
127.0.0.1 (so the charset matters), with a result whose algorithm label is a script tag.

Checks rows, marks, sorting by clicking a header, filtering, per-row details, the inline plots, that the
hostile label is text and never ran, and that no request leaves 127.0.0.1. Screenshots go to the test's
tmp dir; the one of the committed fewshot results is also kept at /tmp/mtbench-report.png.
"""
from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mtbench.renderers import html_report

from renderer_fixtures import COMMITTED, HOSTILE, board_from, write_hostile_results

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
KEPT_SCREENSHOT = Path("/tmp/mtbench-report.png")
pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # the CJK test label in the plots
BROKEN_REFERENCES = """() => {
  const refs = new Set();
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const m = attr.value.match(/url\\(#([^)]+)\\)/) || (attr.name.endsWith("href") && attr.value.match(/^#(.+)$/));
      if (m) { refs.add(m[1]); }
    }
  }
  return {used: refs.size, broken: [...refs].filter(id => document.querySelectorAll(`[id="${id}"]`).length !== 1)};
}"""
PROBE = "window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };"


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves text/html without a charset parameter, like most static servers."""

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    hostile = board_from(write_hostile_results(root / "results"))
    committed = board_from(COMMITTED)
    (root / "hostile.html").write_bytes(html_report.render(hostile).encode("utf-8"))
    (root / "committed.html").write_bytes(html_report.render(committed).encode("utf-8"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hostile, committed
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright  # the `test` extra; never skipped

    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it with apt-get"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site):
    """A fresh page that records every request and dialog."""
    base = site[0]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.requests, page.dialogs, page.errors = [], [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.add_init_script(PROBE)
    yield page
    assert all(url.startswith(base + "/") for url in page.requests), page.requests
    page.close()


def rows(page) -> list[str]:
    """Experiment labels of the visible rows, top to bottom (the text of each row's summary)."""
    return page.eval_on_selector_all("#leaderboard tbody tr:not([hidden]) summary", "els => els.map(e => e.textContent)")


def test_rows_marks_charset_plots_and_no_script_ran(page, site, tmp_path):
    base, hostile, _ = site
    page.goto(f"{base}/hostile.html")
    assert page.title() == hostile.title
    assert rows(page) == list(hostile.wide["experiment"])
    assert HOSTILE in rows(page)  # shown as text ...
    assert page.evaluate("window.__alerts") == [] and page.dialogs == []  # ... and never ran
    assert page.locator("body script").count() == 1  # only the report's own script
    best = page.locator("#leaderboard tbody tr").first.locator("td.best")
    assert best.count() == 3 and best.first.inner_text().startswith("96.2 ± 0.4 (600) *")  # utf-8 over HTTP
    tied = page.locator("#leaderboard tbody tr", has_text=HOSTILE).locator("td .mark.tied")
    assert tied.inner_text() == "="
    assert page.locator("#leaderboard tbody tr").nth(0).locator("td .rank").first.inner_text() == "#1"
    for kind in ("shots", "cost", "curves", "cd"):
        assert page.locator(f"#plot-{kind} svg").bounding_box()["width"] > 200
    n_5way = hostile.cells[hostile.cells["n_way"] == 5]["experiment"].nunique()
    assert page.locator("#plot-shots g[id^='series-shots-5w-']").count() == n_5way
    assert page.locator("#plot-cost g[id^='pareto-front-']").count() == 3  # one per protocol panel
    refs = page.evaluate(BROKEN_REFERENCES)  # four inline SVGs: every clip path or marker they use is unique
    assert refs["used"] > 10 and refs["broken"] == []
    assert "Provenance" in page.inner_text("body") and "result_files" in page.inner_text("body")
    assert page.errors == []
    shot = tmp_path / "hostile.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_sort_by_clicking_headers(page, site):
    base, hostile, _ = site
    page.goto(f"{base}/hostile.html")
    means = hostile.cells[hostile.cells["protocol"] == "5w1s"].set_index("experiment")["mean"]
    missing = [e for e in hostile.wide["experiment"] if e not in means.index]
    page.click("#leaderboard th:text-is('5-way 1-shot')")
    assert rows(page) == list(means.sort_values(ascending=False, kind="stable").index) + missing
    page.click("#leaderboard th:text-is('5-way 1-shot')")
    assert means.is_unique and rows(page) == list(means.sort_values().index) + missing  # missing stay last
    page.focus("#leaderboard th:text-is('experiment')")
    page.keyboard.press("Enter")  # headers sort from the keyboard too
    assert rows(page) == sorted(hostile.wide["experiment"], key=str.lower)
    assert page.get_attribute("#leaderboard th:text-is('experiment')", "aria-sort") == "ascending"


def test_filter_and_details(page, site):
    base, hostile, _ = site
    page.goto(f"{base}/hostile.html")
    page.fill("#filter", "Reptile")
    assert rows(page) == [e for e in hostile.wide["experiment"] if "reptile" in e] and len(rows(page)) == 2
    assert page.inner_text("#shown") == "2"
    page.fill("#filter", "transfer")  # the kind column is searched too
    assert sorted(rows(page)) == ["finetune", "linear-probe"]
    page.fill("#filter", "")
    assert len(rows(page)) == len(hostile.wide)
    row = page.locator("#leaderboard tbody tr", has_text="maml-l2sp")
    row.locator("summary").click()
    details = row.locator("details").inner_text()
    assert "hyperparameters" in details and "l2sp" in details and "code version" in details
    assert "paired test" in details and "Wilcoxon p" in details


def test_committed_report_screenshot(page, site, tmp_path):
    base, _, committed = site
    page.goto(f"{base}/committed.html")
    assert len(rows(page)) == len(committed.wide)
    page.screenshot(path=str(tmp_path / "committed.png"), full_page=True)
    shutil.copyfile(tmp_path / "committed.png", KEPT_SCREENSHOT)
    assert KEPT_SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
