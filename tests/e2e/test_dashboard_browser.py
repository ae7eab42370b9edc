"""End to end in a real browser: scripts/dashboard.sh serves the app on 127.0.0.1, headless
chromium (Debian's chromium + chromium-driver, driven by selenium) records a verdict, and
the screenshot it takes is checked to show a rendered page."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from review_fixtures import LineFixture, line_copy

from exdd.config import load_params
from exdd.line.lines import line_config
from exdd.line.review.export import inbox_name
from exdd.line.review.verdicts import VerdictStore

ROOT = Path(__file__).parents[2]
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
START_TIMEOUT = 120
WAIT = 60
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1100")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromedriver (apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
           ) -> Iterator[tuple[str, LineFixture]]:
    """The dashboard on a free loopback port, as scripts/dashboard.sh starts it."""
    line = line_copy(tmp_path_factory.getbasetemp(), tmp_path / "line")
    port = _free_port()
    env = dict(os.environ, EXDD_PARAMS=str(line.params_file), EXDD_DASHBOARD_PORT=str(port))
    log = open(tmp_path / "streamlit.log", "wb")
    server = subprocess.Popen(["bash", str(ROOT / "scripts" / "dashboard.sh")], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not start: {(tmp_path / 'streamlit.log').read_text()}")
            time.sleep(0.5)
        yield url, line
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_browser_records_a_verdict(served: tuple[str, LineFixture], tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, line = served
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        wait = WebDriverWait(driver, WAIT)
        driver.get(url)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Review queue"))
        name = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, "input[aria-label='Operator name']")))
        name.send_keys("ana", Keys.ENTER)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Acting as"))
        wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//div[@aria-label='Verdict']//label[.//p[text()='normal']]"))).click()
        record = wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//button[.//p[text()='Record verdict']]")))
        record.click()
        wait.until(ec.visibility_of_element_located(
            (By.XPATH, "//div[@data-testid='stAlert'][contains(., 'Recorded normal')]")))
        # The rerun has rendered the next image: its verdict is not chosen yet.
        wait.until(ec.presence_of_element_located(
            (By.XPATH, "//button[.//p[text()='Record verdict']][@disabled]")))
        driver.execute_script("arguments[0].scrollIntoView()", driver.find_element(
            By.XPATH, "//div[@data-testid='stAlert'][contains(., 'Recorded normal')]"))
        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 800
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200

    params = load_params(line.workspace / "params.yaml")
    store = VerdictStore.for_workspace(params.review, line.workspace)
    recorded = store.history("demo")
    assert [(v.verdict, v.operator) for v in recorded] == [("normal", "ana")]
    inbox = line.workspace / line_config(load_params(line.params_file), "demo").inbox
    with open(inbox / params.intake.labels_file, newline="") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert rows[inbox_name(recorded[0].image)]["label"] == "normal"
