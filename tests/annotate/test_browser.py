"""A rater and the owner in headless Chromium (Selenium 4, Debian's chromium and chromedriver)
against the real server on loopback: login → training → pilot (with feedback) → a formal
video → (owner) export, playing the <video> element on the rate page. Screenshots of the rate
page and the owner page go to $QSAVE_ANNOTATE_SHOTS (to look at them), else the test's tmp."""

import base64
import os
from pathlib import Path

import pandas as pd
import pytest
from annotate_harness import LAYOUT, PASSWORD, build_project, serve, truth

from qsave.annotate.config import LOW_LEVELS, REASONS, AnnotateConfig
from qsave.dimensions import Dimension

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("needs Debian's chromium and chromedriver (apt install chromium "
                "chromium-driver): /usr/bin/chromium or /usr/bin/chromedriver is missing",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: selenium drives that binary)
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_S = 30  # seconds a page may take to load
PLAY = """
const done = arguments[arguments.length - 1];
const video = document.getElementById("player");
video.muted = true;
video.play().then(() => setTimeout(() => {
  video.pause();
  done({time: video.currentTime, ready: video.readyState, error: video.error && video.error.code});
}, 800)).catch((e) => done({failed: String(e), error: video.error && video.error.code}));
"""


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1100,1000", "--mute-audio",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


LEFT = "return window.qsaveLeft !== true && document.readyState === 'complete'"


def follow(driver, element) -> None:
    """Click ``element`` and wait until the next page has loaded (generous: 2 shared cores).

    A mark on the old page's window tells the pages apart: selenium's ``staleness_of`` asks
    chromedriver about the old page's element, which answers "Node with given id does not
    belong to the document" (an unknown error, not a stale element) when the swap is under
    way; any error while the page changes is retried here."""
    driver.execute_script("window.qsaveLeft = true")
    element.click()
    WebDriverWait(driver, WAIT_S, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(LEFT))


def log_in(driver, url: str, name: str) -> None:
    driver.get(f"{url}/login")
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    follow(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def heading(driver) -> str:
    return WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "h1")).text


def play(driver) -> None:
    """Play the rate page's video: it must advance (or hold decoded data) with no MediaError."""
    state = driver.execute_async_script(PLAY)
    assert state.get("error") is None and "failed" not in state, state
    assert state["time"] > 0 or state["ready"] >= 2, state


def rate(driver, levels: dict[str, str]) -> None:
    """Choose each level (and the first reason of a low one), then submit."""
    for dim, level in levels.items():
        driver.find_element(By.CSS_SELECTOR, f"input[name={dim}_level][value={level}]").click()
        if level in LOW_LEVELS:
            Select(driver.find_element(By.NAME, f"{dim}_reason")).select_by_value(
                REASONS[dim][0])
    follow(driver, driver.find_element(By.ID, "submit-rating"))


def shot(driver, folder: Path, name: str) -> None:
    """A screenshot of the whole page, beyond the viewport (Chrome DevTools Protocol)."""
    folder = Path(os.environ.get("QSAVE_ANNOTATE_SHOTS", folder))
    folder.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 5000),
            "scale": 1}
    image = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})
    (folder / name).write_bytes(base64.b64decode(image["data"]))


def test_rater_and_owner_in_chromium(browser, annotate_clips, tmp_path):
    project = build_project(tmp_path / "project", annotate_clips, AnnotateConfig(pilot_size=2),
                            ("rosa",))
    levels = truth(annotate_clips)
    with serve(project) as server:
        log_in(browser, server.url, "rosa")
        assert heading(browser) == "Rating guide"
        assert Dimension.VISUAL.criteria[0] in browser.page_source
        assert browser.find_elements(By.CSS_SELECTOR, ".examples video")  # owner's example
        follow(browser, browser.find_element(By.ID, "finish-training"))

        assert heading(browser) == "Pilot video"
        play(browser)
        reasons = browser.find_element(By.CSS_SELECTOR, "[data-dimension=visual] [data-reasons]")
        assert not reasons.is_displayed()  # the script hides them until a low level
        browser.find_element(By.CSS_SELECTOR, "input[name=visual_level][value=Fair]").click()
        assert reasons.is_displayed()
        browser.find_element(By.CSS_SELECTOR, "button[data-mark=visual_start]").click()
        start = float(browser.find_element(By.ID, "visual_start").get_attribute("value"))
        assert 0 < start < 2
        browser.find_element(By.ID, "visual_end").send_keys("1.9")
        first = levels[LAYOUT.pilot[0]]
        rate(browser, {**first, "visual": "Fair"})
        assert heading(browser) == "Pilot feedback"
        assert "Within one level" in browser.page_source
        follow(browser, browser.find_element(By.LINK_TEXT, "Next pilot video"))

        assert heading(browser) == "Pilot video"
        rate(browser, levels[LAYOUT.pilot[1]])
        assert "You passed the pilot round" in browser.page_source
        follow(browser, browser.find_element(By.LINK_TEXT, "Start rating"))

        assert heading(browser) == "Rate this video"
        play(browser)
        shot(browser, tmp_path, "rate.png")
        video_id = browser.find_element(By.ID, "player").get_attribute("src").rsplit("/", 1)[1]
        rate(browser, levels[video_id])
        assert heading(browser) == "Rate this video"  # the next formal video
        follow(browser, browser.find_element(By.CSS_SELECTOR, "header form button"))  # log out

        log_in(browser, server.url, "olga")
        assert heading(browser) == "Project"
        assert "rosa" in browser.find_element(By.ID, "progress").text
        shot(browser, tmp_path, "owner.png")
        follow(browser, browser.find_element(By.ID, "export-button"))
        assert "Exported to" in browser.find_element(By.CSS_SELECTOR, ".success").text
    assert not [s for s in server.seen if s[2] >= 500]
    ratings = pd.read_csv(project.folder / "export" / "ratings.csv")
    assert set(ratings["video_id"]) == {video_id} and set(ratings["rater_id"]) == {"rosa"}
    assert len(ratings) == 3
    assert (Path(os.environ.get("QSAVE_ANNOTATE_SHOTS", tmp_path)) / "rate.png").stat().st_size
    project.close()
