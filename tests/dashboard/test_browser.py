"""End to end in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium).

``robot-rl train`` runs the PointReach twin with 32 px camera images, 2 actor processes and the virtual operator,
``dashboard.enabled=true``. The page must show both actors, a camera frame from each, their intervention rates and
a point on the learning curve; pausing an actor from the page stops its env steps and resuming restarts them; a
wrong token is refused. Then the dashboard server is killed: the run goes on. A second ``robot-rl dashboard
RUN_DIR`` attaches to the running learner and stops the run from its page; ``train`` exits 0.

Screenshots are written under a temporary directory whose path is printed (``-s`` shows it). Skipped, with the
reason, when chromium, chromedriver or selenium is missing: ``tests/dashboard/run_browser_test.sh`` installs them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                "tests/dashboard/run_browser_test.sh does it)", allow_module_level=True)
pytest.importorskip("selenium", reason="needs selenium (pip install robot-rl[dashboard])")
pytest.importorskip("starlette", reason="needs the dashboard extra (pip install robot-rl[dashboard])")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from support import free_ports  # noqa: E402

pytestmark = pytest.mark.browser  # ~80 s with 4 processes and a browser: its own step, not the default suite


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # an element replaced between lookup and read: look again
            last_error = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def _read_url(run_dir: Path, since: float, timeout: float) -> str:
    path = run_dir / "dashboard" / "url.txt"
    return _wait(lambda: path.exists() and path.stat().st_mtime >= since and path.read_text().strip(), timeout,
                 f"the dashboard URL in {path}")


def _steps(driver, actor: str) -> int:
    return int(driver.find_element(By.CSS_SELECTOR, f'tr[data-actor="{actor}"] td.steps').text)


def _learner_env_steps(run_dir: Path) -> int:
    lines = (run_dir / "metrics_learner.jsonl").read_text().splitlines()
    return max((json.loads(line).get("env_steps", 0) for line in lines if line.endswith("}")), default=0)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,950", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_operator_watches_and_controls_a_twin_run_in_a_browser(tmp_path, browser):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\ndashboard screenshots: {shots}")
    run_dir = tmp_path / "run"
    p1, p2, web, web2 = free_ports(4)
    log = open(tmp_path / "train.log", "ab")
    train = subprocess.Popen(
        [sys.executable, "-m", "robot_rl.cli", "train", "env=point_reach", "env.obs=pixels", "env.image_size=32",
         "algo=sac", "hil=virtual", "hil.virtual.window=3", "num_actors=2", f"run_dir={run_dir}", "num_demos=2",
         "learner.max_env_steps=200000", "learner.warmup_transitions=64", "algo.batch_size=32", "learner.utd=0.25",
         "learner.eval_every_env_steps=150", "learner.eval_episodes=1", "eval_episodes=1", "logger.wandb=disabled",
         "dashboard.enabled=true", f"dashboard.port={web}", f"transport.transitions_port={p1}",
         f"transport.weights_port={p2}"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    try:
        url = _read_url(run_dir, 0.0, 90)
        base = url.split("?")[0]

        browser.get(base + "?token=not-the-token")  # a wrong token is refused
        assert "403" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(shots / "0-wrong-token.png"))

        browser.get(url)
        assert "e-stop stays in hardware and ROS" in browser.find_element(By.ID, "estop-note").text
        for actor in ("actor-0", "actor-1"):  # both actors, a camera frame from each
            _wait(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-actor="{actor}"] td.conn').text
                  == "connected", 60, f"{actor} in the fleet table")
            _wait(lambda: browser.execute_script(
                "const i = document.querySelector(arguments[0]); return i && i.complete && i.naturalWidth > 0",
                f'img.frame[data-actor="{actor}"]'), 30, f"a camera frame from {actor}")
        _wait(lambda: any(float(e.text.rstrip(" %")) > 0 for e in
                          browser.find_elements(By.CSS_SELECTOR, "#fleet td.intervention")), 60,
              "a non-zero intervention rate (the virtual operator takes over)")
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#curve circle.eval-point"), 90,
              "a point on the learning curve")
        assert float(browser.find_element(By.ID, "updates-per-s").text) >= 0
        # the critic check runs (SAC) and has raised nothing: its alarm list stays hidden
        assert browser.execute_script("return document.getElementById('critic-alarms').hidden") is True
        browser.save_screenshot(str(shots / "1-live.png"))

        # Pause actor-1 from the page: once it reports itself paused, its env steps stand still.
        browser.find_element(By.CSS_SELECTOR, 'button[data-action="pause"][data-actor="actor-1"]').click()
        _wait(lambda: "paused" in browser.find_element(By.CSS_SELECTOR, 'tr[data-actor="actor-1"]')
              .get_attribute("class"), 20, "actor-1 to report itself paused")
        time.sleep(1.0)  # a status already in flight when the pause landed
        paused_at, other_at = _steps(browser, "actor-1"), _steps(browser, "actor-0")
        time.sleep(3.0)
        assert _steps(browser, "actor-1") == paused_at, "a paused actor stepped"
        assert _steps(browser, "actor-0") > other_at, "the other actor should keep stepping"
        browser.save_screenshot(str(shots / "2-actor-1-paused.png"))
        browser.find_element(By.CSS_SELECTOR, 'button[data-action="resume"][data-actor="actor-1"]').click()
        _wait(lambda: _steps(browser, "actor-1") > paused_at, 30, "actor-1 to step again after resume")

        # Label actor-0's current episode a success: the same path as the teleop keys (HilSession events).
        browser.find_element(By.CSS_SELECTOR, 'button[data-action="label_success"][data-actor="actor-0"]').click()
        _wait(lambda: "dashboard label_success" in (run_dir / "logs" / "actor-0.log").read_text(), 20,
              "actor-0 to apply the label")
        assert "label_success actor-0: sent" in browser.find_element(By.ID, "messages").text
        browser.save_screenshot(str(shots / "3-commands.png"))

        # The dashboard dying never affects the run.
        pid = json.loads((run_dir / "dashboard" / "server.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        before = _learner_env_steps(run_dir)
        _wait(lambda: _learner_env_steps(run_dir) > before + 50, 30, "the run to go on without its dashboard")
        assert train.poll() is None

        # A new dashboard attaches to the running learner; its Stop button ends the run cleanly.
        since = time.time() - 1
        server = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "dashboard", str(run_dir), "--port",
                                   str(web2)], stdout=log, stderr=subprocess.STDOUT)
        try:
            browser.get(_read_url(run_dir, since, 60))
            _wait(lambda: browser.find_element(By.ID, "feed-state").text == "learner live", 30, "the new page")
            browser.find_element(By.ID, "run-stop").click()
            browser.switch_to.alert.accept()
            _wait(lambda: browser.find_element(By.ID, "feed-state").text in ("stopping", "learner feed lost"), 20,
                  "the page to show the run stopping")
            browser.save_screenshot(str(shots / "4-stopping.png"))
            assert train.wait(120) == 0
        finally:
            server.terminate()
            server.wait(20)
        controls = [json.loads(line) for line in (run_dir / "dashboard" / "controls.jsonl").read_text().splitlines()]
        assert [c["request"].get("action") for c in controls if c["status"] == 202] == \
            ["pause", "resume", "label_success", "stop"]
        assert all(c["time"] > 0 for c in controls)
    finally:
        if train.poll() is None:
            train.send_signal(signal.SIGINT)
            try:
                train.wait(60)
            except subprocess.TimeoutExpired:
                train.kill()
        log.close()
