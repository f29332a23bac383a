"""The HTML report: one self-contained page, every chart drawn, nothing fetched, same bytes.

The browser tests open the page in headless Chromium and drive it over the Chrome
DevTools Protocol through `--remote-debugging-pipe` (no extra package). Chromium is
required: without it these tests fail, they do not skip.
"""

from __future__ import annotations

import copy
import fcntl
import itertools
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from ami_engine.report import PANELS, render_report
from report_fixtures import sample_report_inputs

FULL_CHARTS = {
    "fig-params", "fig-levels", "fig-metrics", "fig-critical", "fig-needless-reasons", "fig-needless-fields",
    "fig-learning-loss", "fig-learning-metrics", "fig-learning-params", "fig-trace-cus", "fig-trace-levels",
    "fig-trace-clamp", "fig-trace-boundary", "fig-trace-confidence",
}
LEARNING_CHARTS = {c for c in FULL_CHARTS if c.startswith("fig-learning")}
TRACE_CHARTS = {c for c in FULL_CHARTS if c.startswith("fig-trace")}
LAPTOP_WIDTH = 1280


# --- a minimal DevTools client -------------------------------------------------------


NO_CHROMIUM = "the report's browser tests need Chromium: apt-get install chromium (or set CHROMIUM to its path)"


def _find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    return None


class DevTools:
    """Chromium with its DevTools endpoint on fds 3 (commands in) and 4 (replies out).

    Messages are JSON objects ending in a NUL byte. Replies carry the command's id; events
    carry a method and, for a page, the session id of the target they come from.
    """

    def __init__(self, binary: str, profile: Path) -> None:
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        # Move the child's ends above fd 10 first, so that placing them on 3 and 4 cannot clobber one another.
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, replies_w))
        os.close(commands_r)
        os.close(replies_w)

        def wire_pipes() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.process = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--proxy-server=127.0.0.1:9",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False,
        )
        os.close(child_in)
        os.close(child_out)
        self._out = os.fdopen(commands_w, "wb", buffering=0)
        self._in = os.fdopen(replies_r, "rb", buffering=0)
        self._ids = itertools.count(1)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._in.read(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("Chromium did not answer in time") from None
        if message is None:
            raise RuntimeError("Chromium closed its DevTools pipe")
        return message

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        self._out.write(json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("id") == command["id"]:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, session: str, timeout: float = 60.0) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            self.events.append(message)
            if message.get("method") == method and message.get("sessionId") == session:
                return message

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.events.append(self._next(deadline))
            except TimeoutError:
                return

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


# Runs in the page once its charts are drawn; returns what the assertions need.
PAGE_PROBE = """
(async () => {
  const drawn = window.amiReportReady ? await window.amiReportReady : 0;
  const plots = Array.from(document.querySelectorAll(".js-plotly-plot")).map((p) => {
    const svg = p.querySelector("svg.main-svg");
    const box = p.getBoundingClientRect();
    return {
      id: p.id,
      svgChildren: svg ? svg.childElementCount : 0,
      traces: p.querySelectorAll("g.trace").length,
      marks: p.querySelectorAll("g.trace path, g.trace .point").length,
      data: (p.data || []).length,
      width: box.width,
      height: box.height,
    };
  });
  return {
    drawn: drawn,
    chartDivs: document.querySelectorAll("div.chart").length,
    plots: plots,
    missing: Array.from(document.querySelectorAll("p.missing")).map((e) => e.textContent),
    scrollWidth: document.documentElement.scrollWidth,
  };
})()
"""


def open_in_browser(devtools: DevTools | None, page: Path) -> dict[str, Any]:
    """Load the page at laptop width; return the probe, the URLs it requested and its errors."""
    if devtools is None:
        pytest.fail(NO_CHROMIUM)  # a failure, not a skip: CI installs Chromium
    target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Network", "Page", "Runtime", "Log"):
        devtools.send(f"{domain}.enable", session=session)
    devtools.send("Emulation.setDeviceMetricsOverride",
                  {"width": LAPTOP_WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
    devtools.send("Page.navigate", {"url": page.as_uri()}, session=session)
    devtools.wait_event("Page.loadEventFired", session)
    probe = devtools.send("Runtime.evaluate", {"expression": PAGE_PROBE, "awaitPromise": True,
                                               "returnByValue": True}, session=session)
    devtools.drain(0.5)
    events = [e for e in devtools.events if e.get("sessionId") == session]
    devtools.send("Target.closeTarget", {"targetId": target})
    if "exceptionDetails" in probe:
        pytest.fail(f"the page probe failed: {probe['exceptionDetails']}")
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    errors += [e["params"] for e in events
               if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    errors += [e["params"] for e in events
               if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")]
    return {
        "probe": probe["result"]["value"],
        "requests": [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"],
        "errors": errors,
    }


@pytest.fixture(scope="module")
def devtools(tmp_path_factory: pytest.TempPathFactory):
    binary = _find_chromium()
    if binary is None:
        yield None
        return
    client = DevTools(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    return sample_report_inputs()


@pytest.fixture(scope="module")
def full_html(inputs: dict) -> str:
    return render_report(**inputs)


def _write(tmp_path: Path, html: str, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(html, encoding="utf-8")
    return path


def assert_rendered(result: dict[str, Any], page: Path, expected_charts: set[str]) -> None:
    probe = result["probe"]
    assert probe["chartDivs"] == len(expected_charts)
    assert probe["drawn"] == len(expected_charts)
    assert {p["id"] for p in probe["plots"]} == expected_charts
    for plot in probe["plots"]:
        assert plot["svgChildren"] > 0, plot
        assert plot["data"] > 0 and plot["traces"] > 0 and plot["marks"] > 0, plot
        assert plot["width"] >= 300 and plot["height"] >= 200, plot
    assert result["requests"] == [page.as_uri()], "the page fetched something besides itself"
    assert result["errors"] == []
    assert probe["scrollWidth"] <= LAPTOP_WIDTH, "the page is wider than a laptop screen"


# --- in the browser --------------------------------------------------------------------


def test_full_report_draws_every_chart_offline(devtools: DevTools | None, full_html: str, tmp_path: Path) -> None:
    page = _write(tmp_path, full_html)
    result = open_in_browser(devtools, page)
    assert_rendered(result, page, FULL_CHARTS)
    assert result["probe"]["missing"] == []


def test_report_without_history_and_traces_draws_the_rest(devtools: DevTools | None, inputs: dict,
                                                          tmp_path: Path) -> None:
    page = _write(tmp_path, render_report(inputs["suggestion"], None, None))
    result = open_in_browser(devtools, page)
    assert_rendered(result, page, FULL_CHARTS - LEARNING_CHARTS - TRACE_CHARTS)
    missing = " ".join(result["probe"]["missing"])
    assert "--history history.jsonl" in missing and "--traces traces.jsonl" in missing


def test_plain_config_report_has_no_broken_chart(devtools: DevTools | None, tmp_path: Path) -> None:
    page = _write(tmp_path, render_report({"extends": "base", "J_MIN": 0.8}))
    result = open_in_browser(devtools, page)
    assert_rendered(result, page, {"fig-params"})
    # gate, comparison, needless, learning, traces, provenance: each says what it lacks
    assert len(result["probe"]["missing"]) == 6


# --- the HTML text ---------------------------------------------------------------------


def _missing_sentences(html: str) -> str:
    return " ".join(re.findall(r'<p class="missing">(.*?)</p>', html))


def _chart_ids(html: str) -> set[str]:
    return set(re.findall(r'<div id="([^"]+)" class="chart"', html))


def test_same_input_gives_same_bytes(full_html: str) -> None:
    assert render_report(**sample_report_inputs()) == full_html


def test_page_ids_are_fixed_names(full_html: str) -> None:
    html = full_html.replace(get_plotlyjs(), "")
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    assert ids == FULL_CHARTS | {anchor for anchor, _, _ in PANELS} | {"ami-figures"}


def test_plotly_is_inlined_once_and_nothing_is_linked(full_html: str) -> None:
    html = full_html
    assert html.count(get_plotlyjs()) == 1
    assert not re.search(r"<script[^>]+\bsrc=|<link\b|<img\b|<iframe\b|@import|url\(", html.replace(
        get_plotlyjs(), ""))


def test_missing_history_says_what_to_pass(inputs: dict) -> None:
    html = render_report(inputs["suggestion"], None, inputs["traces"])
    assert "Pass <code>--history history.jsonl</code>" in _missing_sentences(html)
    assert _chart_ids(html) == FULL_CHARTS - LEARNING_CHARTS


def test_missing_traces_say_what_to_pass(inputs: dict) -> None:
    html = render_report(inputs["suggestion"], inputs["history"], [])
    assert "Pass <code>--traces traces.jsonl</code>" in _missing_sentences(html)
    assert _chart_ids(html) == FULL_CHARTS - TRACE_CHARTS


def test_plain_config_says_it_has_no_meta() -> None:
    html = render_report({"extends": "base", "J_MIN": 0.8})
    assert "has no <code>[meta]</code> table: it is a plain config" in html
    assert "0.800" in html and "0.300" in html  # J_MIN as set, H_MAX from the profile it extends
    assert _chart_ids(html) == {"fig-params"}


def test_no_suggestion_says_what_to_pass() -> None:
    assert "Pass <code>--suggestion suggestion.toml</code>" in render_report(None)


@pytest.mark.parametrize(
    ("key", "sentence"),
    [
        ("metrics", "No metrics recorded"),
        ("gate", "No gate verdict recorded"),
        ("needless", "No needless fail-safes recorded"),
    ],
)
def test_missing_meta_table_says_what_to_pass(inputs: dict, key: str, sentence: str) -> None:
    suggestion = copy.deepcopy(inputs["suggestion"])
    del suggestion["meta"][key]
    if key == "metrics":
        del suggestion["meta"]["scenarios"]
    assert sentence in _missing_sentences(render_report(suggestion))


def test_rejected_suggestion_shows_the_failed_check(inputs: dict) -> None:
    suggestion = copy.deepcopy(inputs["suggestion"])
    gate = suggestion["meta"]["gate"]
    gate["verdict"] = "REJECT"
    gate["checks"][3].update(passed=False, figure=2.31)
    html = render_report(suggestion)
    assert '<span class="verdict reject">REJECT</span>' in html
    assert "\u2717 fail" in html
    assert "rejects it: 1 of 7 checks fail (<code>heldout_loss</code>)" in html


def test_text_from_the_input_is_escaped(inputs: dict) -> None:
    suggestion = copy.deepcopy(inputs["suggestion"])
    suggestion["meta"]["data"]["description"] = "<script>alert(1)</script>"
    html = render_report(suggestion)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_large_traces_are_sampled_and_the_caption_says_so(inputs: dict) -> None:
    traces = inputs["traces"] * 6  # 12,000 records; stream s0 comes back six times: 3,000 decisions
    html = render_report(inputs["suggestion"], None, traces)
    assert "its first 2,000 of 3,000 decisions" in html
    assert "One record in 3, 4,000 of 12,000." in html
    figures = json.loads(re.search(r'id="ami-figures">(.*?)</script>', html).group(1))
    boundary_points = sum(len(trace["x"]) for trace in figures["fig-trace-boundary"]["data"])
    assert boundary_points == 4000
    timeline_points = sum(len(trace["x"]) for trace in figures["fig-trace-levels"]["data"][1:])
    assert timeline_points == 2000


def _shapes_y(html: str, chart: str) -> list[float]:
    figures = json.loads(re.search(r'id="ami-figures">(.*?)</script>', html).group(1))
    return sorted(s["y0"] for s in figures[chart]["layout"].get("shapes", []))


def test_critical_floor_is_drawn_from_the_recorded_factor_and_margin(inputs: dict) -> None:
    html = render_report(inputs["suggestion"])
    # baseline on critical: fail-safe rate 96 %, mean H 0.083; factor 0.25, margin 0.02
    assert _shapes_y(html, "fig-critical") == pytest.approx([0.103, 24.0])
    assert "keep at least 0.25 \u00d7 the baseline's fail-safe rate" in html


def test_critical_floor_turned_off_draws_no_limit(inputs: dict) -> None:
    suggestion = copy.deepcopy(inputs["suggestion"])
    suggestion["meta"]["critical_floor"]["factor"] = 0
    html = render_report(suggestion)
    assert _shapes_y(html, "fig-critical") == []
    assert "The critical floor is turned off for this run (factor 0)" in html
