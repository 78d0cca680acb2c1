"""The editing app in a real browser: Debian's headless Chromium, driven by selenium through Debian's
chromedriver (`make setup` installs both as root; no browser is downloaded from anywhere else).

Upload an example image, type the request, run; change one sub-request, run again; save a screenshot
(kept at $APP_SCREENSHOT when set); assert on what the page says, not on pixels."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from app_helpers import running_app

from inference.synthetic_items import write_synthetic_eval_set
from inference.teaching import taught_on_first_item

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 120
HEADLESS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")
#: Chromium's own calls home (updates, sync, safe browsing, metrics): off, the test machine has no network.
NO_BACKGROUND_NETWORK = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
)

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=(
        "Debian's chromium and chromium-driver are not installed and could not be: `make setup` installs "
        "them when run as root with apt-get (`make browser` alone does the same)"
    ),
)


@pytest.fixture(scope="module")
def example(tmp_path_factory, tiny_vlm_dir):
    eval_set = write_synthetic_eval_set(tmp_path_factory.mktemp("eval"), 3, seed=0, max_edits=2)
    first, model = taught_on_first_item(eval_set, tiny_vlm_dir)
    return eval_set, first, model


@pytest.fixture(scope="module")
def url(example, tmp_path_factory):
    eval_set, _, model = example
    out = tmp_path_factory.mktemp("app")
    argv = [
        "--out",
        str(out),
        "--examples",
        str(eval_set),
        "--llm-model",
        str(model),
        "--max-new-tokens",
        "96",
    ]
    with running_app(argv) as (_, served_url):
        yield served_url


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*HEADLESS, *NO_BACKGROUND_NETWORK):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # to list the page's requests
    options.add_argument("--window-size=1400,1900")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


def _wait_for(driver, elem_id: str, *needles: str) -> str:
    """Poll until the element's text holds every needle (or fail after WAIT_S, showing the text)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
            lambda d: all(n in _text(d, elem_id) for n in needles)
        )
    except TimeoutException:
        pytest.fail(f"#{elem_id} never showed {needles}; it shows: {_text(driver, elem_id)!r}")
    return _text(driver, elem_id)


def _type_into(driver, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def _requested_urls(driver) -> set[str]:
    """Every URL the page asked for so far (Chromium's performance log)."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


def test_upload_run_change_a_sub_request_run_again(browser, url, example, tmp_path):
    from selenium.webdriver.common.by import By

    _, first, _ = example
    browser.get(url)
    _wait_for(browser, "notice", "Decomposer:")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(first.image))
    _wait_for(browser, "item_info", first.id, "upload")
    _type_into(browser, "request", first.instruction)
    browser.find_element(By.ID, "run").click()
    status = _wait_for(browser, "status", "Ran plan", "done in")
    assert "1. Brighten the image" in status and "edited by hand" not in status
    assert browser.find_element(By.CSS_SELECTOR, "#actions textarea").get_attribute("value") == "brighten"
    assert (
        browser.find_element(By.CSS_SELECTOR, "#plan textarea").get_attribute("value") == "Brighten the image"
    )
    run_1 = status.split()[1]  # "Run <name> (files in ...)"

    _type_into(browser, "plan", "Darken the image")
    browser.find_element(By.ID, "run").click()
    status = _wait_for(browser, "status", "Ran plan (edited by hand): 1. Darken the image")
    assert run_1 not in status and "single: done in" in status
    assert "original:" in status  # the raw request ran beside it (the tool editor cannot execute it)
    assert browser.find_elements(By.CSS_SELECTOR, "#edited_image img")
    assert "python -m inference --image" in browser.find_element(
        By.CSS_SELECTOR, "#command textarea"
    ).get_attribute("value")
    shot = tmp_path / "app.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    # the page is served whole by the app: no fonts, scripts or calls from anywhere else
    urls = _requested_urls(browser)
    assert any(u.startswith(url) for u in urls)
    assert not [u for u in urls if not u.startswith((url, "data:", "blob:"))]
    if os.environ.get("APP_SCREENSHOT"):
        shutil.copyfile(shot, Path(os.environ["APP_SCREENSHOT"]))
