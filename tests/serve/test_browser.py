"""The page in headless Chromium (Debian's chromium + chromedriver, driven by selenium): open it,
upload a generated clip through the file input, wait for the score, the word timeline and the
explain picture; then a broken clip shows its reason. Screenshots go to $EMOFUSE_ARTIFACTS
(default build/artifacts in the repository)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ABSENT = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
pytestmark = pytest.mark.skipif(bool(ABSENT),
                                reason=f"headless browser test needs Debian's chromium and chromium-driver, "
                                f"missing {ABSENT} (bash scripts/install_serve.sh as root)")
selenium = pytest.importorskip(
    "selenium", reason="the browser test needs selenium (scripts/install_serve.sh)"
)
REPO = Path(__file__).resolve().parents[2]


def artifacts() -> Path:
    folder = Path(os.environ.get("EMOFUSE_ARTIFACTS") or REPO / "build" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(served):
    """The app under uvicorn in a thread, on 127.0.0.1 and a port the kernel chose."""
    import uvicorn

    from emofuse.serve import Limits, create_app

    app = create_app(served["pool"], Limits(upload_dir=str(served["uploads"])))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never try to download a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,2000", "--hide-scrollbars",
                # a generated camera and microphone (a test pattern and a beep), allowed without asking
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_upload_shows_score_timeline_and_explain_picture(served, server, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: "fusion_matched" in d.find_element(By.ID, "model-line").text)
    assert "T+A+V" in browser.find_element(By.ID, "model-line").text
    browser.find_element(By.ID, "file").send_keys(str(served["new"]))
    wait.until(ec.visibility_of_element_located((By.ID, "progress")))
    status = browser.find_element(By.ID, "status").text
    assert status.startswith(("uploading", "extracting"))
    progress_shot = artifacts() / "serve_page_progress.png"
    browser.save_screenshot(str(progress_shot))
    wait.until(ec.visibility_of_element_located((By.ID, "result")))
    score = browser.find_element(By.ID, "score").text
    float(score)  # a signed number such as +0.12
    words = browser.find_elements(By.CSS_SELECTOR, "#timeline .word")
    assert [w.text.strip(".,!?").lower() for w in words] == served["words"]
    # each word is coloured by its own contribution: at least two distinct colours, all set
    colours = {w.value_of_css_property("background-color") for w in words}
    assert len(colours) >= 2
    labels = browser.find_element(By.ID, "labels").text
    assert "2 classes" in labels and "7 classes" in labels
    assert {"text", "audio", "vision"} <= set(browser.find_element(By.ID, "modalities").text.split())
    wait.until(lambda d: d.execute_script("const i = document.getElementById('explain');"
                                          "return i.complete && i.naturalWidth > 0;"))
    browser.execute_script("window.scrollTo(0, 0)")
    shot = artifacts() / "serve_page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    print(f"\nscreenshots: {progress_shot} (while scoring), {shot} (the result)")
    assert list(served["uploads"].iterdir()) == []


def test_a_broken_clip_shows_its_reason(served, server, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(served["broken"]["no_face"]))
    error = WebDriverWait(browser, 120).until(ec.visibility_of_element_located((By.ID, "error")))
    assert error.text.startswith("Error 422 (no_face): noface.mp4: no face:")
    assert not browser.find_element(By.ID, "result").is_displayed()
    shot = artifacts() / "serve_page_error.png"
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")


def test_a_webcam_recording_is_uploaded_as_webm_and_decoded(served, server, browser) -> None:
    """MediaRecorder's webm reaches the server and is decoded; Chromium's fake camera shows a test
    pattern and its microphone beeps, so the answer is emofuse's no-speech or no-face reason."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "record-start").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "record-stop").is_enabled())
    time.sleep(2.0)
    browser.find_element(By.ID, "record-stop").click()
    error = WebDriverWait(browser, 120).until(ec.visibility_of_element_located((By.ID, "error")))
    assert error.text.startswith(
        ("Error 422 (no_speech): recording.webm: ", "Error 422 (no_face): recording.webm: ")
    )
    print(f"\nthe recording's answer: {error.text}")
    assert list(served["uploads"].iterdir()) == []
