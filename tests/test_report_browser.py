"""report.html in a real browser: headless Chromium (Debian's `chromium`; CI installs it, .ci/run) loads the
report of a small real analysis at a 1400-pixel window; every image must load and no table may be wider
than the page.

No Python browser package is needed: the test injects a script into a copy of the report that measures the
page after it loaded and writes the result into the DOM, and Chromium's --dump-dom hands that DOM back.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from folders import ExperimentFolder
from tests.test_report import copy_experiment, grid_experiment  # noqa: F401  (grid_experiment: the fixture)

WINDOW_WIDTH = 1400  # pixels: a laptop's browser window
# Runs once the page, its images included, has loaded: every image decoded, every table's right edge.
MEASURE = """<script>
window.addEventListener("load", function () {
  var page = document.documentElement.clientWidth;
  var images = Array.from(document.images).map(function (image) {
    return {src: image.getAttribute("src"), loaded: image.complete && image.naturalWidth > 0};
  });
  var tables = Array.from(document.querySelectorAll("table")).map(function (table) {
    var box = table.getBoundingClientRect();
    var heading = table.previousElementSibling;
    return {after: heading ? heading.textContent.slice(0, 60) : "", width: box.width, right: box.right};
  });
  var result = document.createElement("pre");
  result.id = "measured";
  result.textContent = JSON.stringify({page: page, images: images, tables: tables});
  document.body.appendChild(result);
});
</script>"""


def chromium() -> str:
    """The browser's command; the test is skipped, saying how to get it, where there is none."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium here: `apt-get install -y chromium` (CI's .ci/run installs it) to run the browser check")


def measure_in_browser(report: Path, scratch: Path, width: int = WINDOW_WIDTH) -> dict:
    """Load a copy of `report` (beside it: its relative links resolve) with the measuring script in headless
    Chromium; returns {page: width in px, images: [{src, loaded}], tables: [{after, width, right}]}."""
    page = report.with_name(f"measured-{report.name}")
    page.write_text(report.read_text() + MEASURE + "\n")  # the report has no </body>: the script ends it
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},1000", "--virtual-time-budget=10000", f"--user-data-dir={scratch / 'profile'}",
               "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="measured">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"the page did not finish loading in Chromium (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def too_wide(measured: dict) -> list[dict]:
    """The tables that reach past the page's right edge (a wider table makes the page scroll sideways)."""
    return [table for table in measured["tables"] if table["right"] > measured["page"] + 0.5]


def test_every_image_loads_and_no_table_is_wider_than_the_page(grid_experiment, tmp_path):
    experiment = copy_experiment(grid_experiment, tmp_path)
    measured = measure_in_browser(ExperimentFolder(experiment).report_path, tmp_path)
    assert measured["page"] == WINDOW_WIDTH  # --hide-scrollbars: the whole window is the page
    assert measured["images"], "the report shows no figure"
    assert [image["src"] for image in measured["images"] if not image["loaded"]] == []
    assert len(measured["tables"]) >= 3  # the settings that vary, the runs, the phases
    assert too_wide(measured) == []


def test_the_check_sees_a_missing_image_and_a_table_too_wide(grid_experiment, tmp_path):
    """The check can fail: an image whose file is gone, and a table of unbreakable cells wider than the page."""
    experiment = copy_experiment(grid_experiment, tmp_path)
    report = ExperimentFolder(experiment).report_path
    wide = "<table><tr>" + ("<td style='white-space:nowrap;overflow-wrap:normal'>" + "x" * 40) * 60 + "</tr></table>"
    report.write_text(report.read_text() + "<img src='figures/gone.png'>" + wide)
    measured = measure_in_browser(report, tmp_path)
    assert "figures/gone.png" in [image["src"] for image in measured["images"] if not image["loaded"]]
    assert len(too_wide(measured)) == 1
