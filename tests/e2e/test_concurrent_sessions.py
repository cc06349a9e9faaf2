"""Three people on the page at once: three headless Chromium browsers against one `streamlit run app.py`.

Each browser is its own Streamlit session; all three share the server's one NookService (cache_resource) and its one
bundled model, which answers one question at a time, so the later sessions wait while it works for the first.
Needs Debian's chromium and chromium-driver, like tests/e2e/test_browser.py, whose helpers this reuses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_browser import CHROMEDRIVER, CHROMIUM, LAST_ANSWER_JS, streamlit_app

# A different question for each session, and the note that answers it (data/sample-questions.jsonl): with one chunk
# of context (NOOK_RETRIEVAL_K=1) the right note is the only source.
ASKED = {
    "How much is the rent for the Marlow Road flat?": "2024-09-08.md",
    "What is my sourdough starter called?": "sourdough.md",
    "When does the broadband contract end?": "home-admin.txt",
}
ANSWER_WAIT = 150.0  # seconds for all three answers; the model prefills each prompt on a shared CPU

# What one page shows: the questions its user asked, the whole main area's text, and any exception box.
PAGE_JS = """
const user = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
  .filter(m => m.querySelector('[data-testid="stChatMessageAvatarUser"]'))
  .map(m => m.querySelector('[data-testid="stChatMessageContent"]').innerText.trim());
const main = document.querySelector('[data-testid="stMain"]');
const exceptions = [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText);
return {user: user, main: main ? main.innerText : '', exceptions: exceptions};
"""


@pytest.fixture
def shared_server(tmp_path: Path) -> Iterator[str]:
    """`streamlit run app.py` on 127.0.0.1 with the sample notes and the bundled model (short answers, one chunk)."""
    with streamlit_app(tmp_path, NOOK_MAX_TOKENS="16", NOOK_RETRIEVAL_K="1") as url:
        yield url


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[list[Any]]:
    """One headless Chromium per question, each with its own profile: separate users, not tabs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("install Debian's browser first: apt-get install -y chromium chromium-driver")
    drivers: list[Any] = []
    try:
        for number in range(len(ASKED)):
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for flag in (
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / f'chromium-profile-{number}'}", "--window-size=1200,1400",
            ):  # fmt: skip
                options.add_argument(flag)
            drivers.append(webdriver.Chrome(service=Service(CHROMEDRIVER), options=options))
        yield drivers
    finally:
        for driver in drivers:
            driver.quit()


@pytest.mark.slow
def test_three_sessions_asking_at_once_each_see_only_their_own_answer_and_source(
    shared_server: str, browsers: list[Any]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    questions = list(ASKED)
    for driver in browsers:  # three fresh sessions whose first runs overlap on the fresh server
        driver.get(shared_server)
    boxes = []
    for driver in browsers:
        boxes.append(
            WebDriverWait(driver, 90).until(
                ec.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stChatInputTextArea"]'))
            )
        )
        WebDriverWait(driver, 90).until(  # the first run has finished: the index stats are in the sidebar
            lambda d: "Documents" in d.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
        )

    for box, question in zip(boxes, questions, strict=True):  # all three within a fraction of a second
        box.send_keys(question)
        box.send_keys(Keys.ENTER)
    all_sent = time.monotonic()

    states: list[dict[str, Any] | None] = [None] * len(browsers)
    finished: list[float | None] = [None] * len(browsers)
    most_in_flight = 0  # pages at once with their question shown and its answer still coming
    deadline = all_sent + ANSWER_WAIT
    while None in finished and time.monotonic() < deadline:
        for number, driver in enumerate(browsers):
            if finished[number] is not None:
                continue
            state = driver.execute_script(LAST_ANSWER_JS)
            states[number] = state
            if state and (state["sources"] or state["errors"]):
                finished[number] = time.monotonic()
        in_flight = [state is not None and done is None for state, done in zip(states, finished, strict=True)]
        most_in_flight = max(most_in_flight, sum(in_flight))
        time.sleep(0.1)
    assert None not in finished, f"not every page got its answer within {ANSWER_WAIT:g} s: {states}"

    answers: list[str] = []
    for driver, question, state in zip(browsers, questions, states, strict=True):
        assert state is not None
        assert not state["errors"], (question, state)
        answers.append(state["text"].strip())
        assert answers[-1], f"an empty answer to {question!r}: {state}"
        assert ASKED[question] in state["sources"], (question, state["sources"])
        for other in set(ASKED.values()) - {ASKED[question]}:
            assert other not in state["sources"], (question, state["sources"])
        page = driver.execute_script(PAGE_JS)
        assert page["user"] == [question], page["user"]  # its own question, once, and no one else's
        assert not page["exceptions"], page["exceptions"]
        for other in set(questions) - {question}:
            assert other not in page["main"], f"the page that asked {question!r} shows {other!r}"
    # Each page shows the answer made for it, not another page's answer.
    for number, driver in enumerate(browsers):
        main = driver.execute_script(PAGE_JS)["main"]
        for other, answer in enumerate(answers):
            if other != number and answer != answers[number]:
                assert answer not in main, f"page {number} shows page {other}'s answer {answer!r}"
    # The sessions really overlapped: at one moment several pages were waiting for their answers together.
    assert most_in_flight >= 2, f"the answers came one after another, never together: {finished}"
