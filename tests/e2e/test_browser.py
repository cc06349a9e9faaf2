"""The page in a real browser: `streamlit run app.py` on 127.0.0.1, driven by Debian's headless Chromium.

Needs `apt-get install -y chromium chromium-driver` and `pip install selenium==4.51.0`; never downloads a browser.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.app.conftest import clean_env, index_samples
from tests.conftest import ROOT
from tests.integration.helpers import free_port, stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUESTION = "How much is the rent for the Marlow Road flat?"
EXPECTED_SOURCE = "2024-09-08.md"  # data/sample-questions.jsonl

# The last assistant message: its streamed text (0 while the spinner shows), whether its sources are shown yet.
LAST_ANSWER_JS = """
const messages = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
  .filter(m => m.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
if (!messages.length) return null;
const content = messages[messages.length - 1].querySelector('[data-testid="stChatMessageContent"]');
const captions = [...content.querySelectorAll('[data-testid="stCaptionContainer"]')].map(c => c.innerText);
const sources = captions.find(c => c.startsWith('Sources:')) || null;
const errors = [...content.querySelectorAll('[data-testid="stAlert"]')].map(a => a.innerText);
const spinning = !!content.querySelector('[data-testid="stSpinner"]');
const first = content.querySelector('[data-testid="stMarkdownContainer"]');
return {length: spinning || !first ? 0 : first.innerText.trim().length, sources: sources, errors: errors,
        text: first ? first.innerText : ''};
"""


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not become healthy in {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def streamlit_app(tmp_path: Path, **env: str) -> Iterator[str]:
    """`streamlit run app.py` on 127.0.0.1 over the indexed sample notes, with these NOOK_* settings; stopped after."""
    data_dir = tmp_path / "nookdata"
    index_samples(data_dir)
    port = free_port()
    log = tmp_path / "streamlit.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "app.py",
                "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
            ],
            cwd=ROOT, env=clean_env(NOOK_DATA_DIR=str(data_dir), **env), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process, log)
            yield url
        finally:
            stop_process(process, timeout=15)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The page with the sample notes indexed and the real bundled model."""
    with streamlit_app(tmp_path, NOOK_MAX_TOKENS="48") as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver  # a missing selenium fails the test: no skip hides the browser check
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("install Debian's browser first: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1500", "--force-device-scale-factor=1",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_question_streams_an_answer_with_its_source(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server)
    box = WebDriverWait(driver, 60).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stChatInputTextArea"]'))
    )
    WebDriverWait(driver, 60).until(  # the first run has finished: the index stats are in the sidebar
        lambda d: "Documents" in d.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
    )
    box.send_keys(QUESTION)
    box.send_keys(Keys.ENTER)

    lengths: list[int] = []  # the answer's length at each poll while it streams, in order
    state = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = driver.execute_script(LAST_ANSWER_JS)
        if state and (state["sources"] or state["errors"]):
            break
        if state and state["length"] and (not lengths or lengths[-1] != state["length"]):
            lengths.append(state["length"])
        time.sleep(0.02)
    assert state and not state["errors"], state
    assert state["sources"], f"no sources shown within the time limit; last state {state}"
    final = len(state["text"].strip())
    assert final > 0
    growing = [n for n in lengths if 0 < n <= final]
    assert len(set(growing)) >= 2, f"the answer did not grow while streaming: lengths seen {lengths}, final {final}"
    assert growing == sorted(growing), f"the answer shrank while streaming: {growing}"
    assert EXPECTED_SOURCE in state["sources"], state["sources"]

    # Open the excerpts, so the screenshot shows the highlighted snippets too.
    message = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')[-1]
    message.find_element(By.CSS_SELECTOR, '[data-testid="stExpander"] summary').click()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".nook-snippet mark"))
    driver.execute_script(  # back to the top of the page: Streamlit scrolls its main container, not the window
        "document.querySelectorAll('[data-testid=\"stMain\"], [data-testid=\"stAppViewContainer\"]')"
        ".forEach(e => { e.scrollTop = 0; }); window.scrollTo(0, 0);"
    )
    time.sleep(0.5)
    shot = tmp_path / "screenshot.png"
    assert driver.save_screenshot(str(shot))
    (ROOT / "docs").mkdir(exist_ok=True)
    shutil.copyfile(shot, ROOT / "docs" / "screenshot.png")
