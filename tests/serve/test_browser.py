"""`cnnkit serve` as a user runs it: a real server process on 127.0.0.1, called over HTTP, and its web page driven
in Debian's Chromium through selenium (scripts/setup.sh installs chromium and chromium-driver)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if json.load(answer)["status"] == "ready":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not become ready")


@pytest.fixture(scope="module")
def server(digits_classifier, tmp_path_factory):
    """A `cnnkit serve` process with the digits classifier (as 'digits') and the text detector cnnkit ships ('pages')."""
    from cnnkit.tasks.ocr.shipped import DETECTOR

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", "--weights", str(digits_classifier), "--weights",
                                    str(DETECTOR), "--name", "digits", "--name", "pages", "--port", str(port), "--device", "cpu",
                                    "--log-level", "warning"], stdout=sink, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def page_image(tmp_path_factory) -> Path:
    from cnnkit.data.synth_text_pages import synth_text_pages

    root = tmp_path_factory.mktemp("pages")
    synth_text_pages(root / "pages", n=2, val_fraction=0.5, seed=4, progress=False)
    return sorted((root / "pages" / "val" / "images").iterdir())[0]


def test_the_server_process_answers_over_http(server, digits_root):
    import httpx

    image = sorted((digits_root / "test" / "7").glob("*.png"))[0]
    answer = httpx.post(f"{server}/predict/digits", files={"file": (image.name, image.read_bytes(), "image/png")}, timeout=30)
    assert answer.status_code == 200 and answer.json()[0]["label"] == "7"
    assert httpx.get(f"{server}/models").json()[1]["task"] == "ocr_det"
    assert "cnnkit_requests_total" in httpx.get(f"{server}/metrics").text
    assert httpx.get(f"{server}/predict/digits").status_code == 405


def test_serve_refuses_bad_arguments_in_one_line(tmp_path, digits_classifier):
    code, _, err = run_cli(["serve", "--weights", str(tmp_path / "missing.safetensors")])
    assert code == 2 and err.strip().count("\n") == 0 and "missing.safetensors: no such file" in err
    code, _, err = run_cli(["serve", "--weights", str(digits_classifier), "--weights", str(digits_classifier)])
    assert code == 2 and "both serve as" in err
    code, _, err = run_cli(["serve", "--weights", str(digits_classifier), "--name", "a", "--name", "b"])
    assert code == 2 and "2 --name for 1 --weights" in err


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert binary and driver, "Debian's chromium and chromium-driver are needed: scripts/setup.sh installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_draws_results_in_a_real_browser(server, digits_root, page_image, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = chromium()
    try:
        browser.get(server + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 2)

        def upload(path: Path) -> list:
            browser.execute_script("document.getElementById('latency').textContent = ''")
            browser.find_element(By.ID, "file").send_keys(str(path))
            wait.until(lambda b: b.find_element(By.ID, "latency").text.startswith("latency")
                       and "done" in b.find_element(By.ID, "status").text)
            return json.loads(browser.find_element(By.ID, "json").text)

        digit = sorted((digits_root / "test" / "3").glob("*.png"))[0]
        rows = upload(digit)
        assert rows[0]["file"] == digit.name and rows[0]["label"] == "3"
        assert browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]") == [8, 8]

        Select(browser.find_element(By.ID, "model")).select_by_value("pages")
        rows = upload(page_image)
        assert len(rows[0]["lines"]) >= 2 and any(line["text"] for line in rows[0]["lines"])
        from PIL import Image

        width, height = Image.open(page_image).size
        assert browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]") == [width, height]
        # the outline colour of the lines is on the canvas: the drawing happened, not only the picture
        red = browser.execute_script("""
            const c = document.getElementById('canvas'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 120 && d[i + 2] < 120) n++; return n;""")
        assert red > 100, red
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000

        browser.set_window_size(390, 844)  # a phone's width: nothing wider than the screen
        time.sleep(0.5)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        browser.save_screenshot(str(tmp_path / "phone.png"))
    finally:
        browser.quit()
