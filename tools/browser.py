"""The serve page as a person uses it, for the tests and the tools: mnist.py serve started on a free port,
headless Chromium (or Chrome) driven by Selenium, numbers written on the page with the mouse."""

import itertools
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(*args):
    """Starts mnist.py serve on a free port; returns (process, base URL), or (process, None) if it exited."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "mnist.py"), "serve", "--device", "cpu", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "mnist.py serve: write a number at http://127.0.0.1:PORT/ (Ctrl-C stops)"
    if not line:
        return proc, None
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # the request log, drained
    return proc, line.split(" at ")[1].split()[0]


STROKES = {  # each digit as a person draws it with the mouse: strokes of points in a unit square, y down
    0: [[(0.5 + 0.2 * math.sin(2 * math.pi * t / 24), 0.5 - 0.3 * math.cos(2 * math.pi * t / 24)) for t in range(25)]],
    1: [[(0.45, 0.2), (0.55, 0.15), (0.55, 0.5), (0.55, 0.85)]],
    2: [[(0.3, 0.3), (0.4, 0.19), (0.55, 0.16), (0.67, 0.24), (0.68, 0.37), (0.58, 0.5), (0.45, 0.62), (0.3, 0.8),
         (0.5, 0.8), (0.72, 0.8)]],
    3: [[(0.3, 0.2), (0.5, 0.14), (0.67, 0.22), (0.65, 0.37), (0.47, 0.46), (0.66, 0.55), (0.69, 0.7), (0.52, 0.83),
         (0.3, 0.78)]],
    4: [[(0.55, 0.15), (0.43, 0.38), (0.3, 0.6), (0.5, 0.6), (0.75, 0.6)], [(0.62, 0.35), (0.62, 0.6), (0.62, 0.87)]],
    5: [[(0.68, 0.17), (0.5, 0.17), (0.35, 0.17)], [(0.35, 0.17), (0.33, 0.46), (0.5, 0.42), (0.66, 0.5), (0.68, 0.67),
                                                    (0.55, 0.81), (0.32, 0.78)]],
    6: [[(0.62, 0.15), (0.47, 0.3), (0.36, 0.5), (0.36, 0.7), (0.5, 0.83), (0.65, 0.73), (0.64, 0.56), (0.5, 0.5),
         (0.37, 0.6)]],
    7: [[(0.28, 0.2), (0.5, 0.2), (0.72, 0.2), (0.6, 0.45), (0.47, 0.85)]],
    8: [[(0.62, 0.22), (0.5, 0.15), (0.37, 0.23), (0.4, 0.37), (0.5, 0.47), (0.64, 0.6), (0.62, 0.78), (0.5, 0.85),
         (0.36, 0.77), (0.37, 0.6), (0.5, 0.47), (0.6, 0.36), (0.62, 0.22)]],
    9: [[(0.64, 0.3), (0.5, 0.17), (0.36, 0.27), (0.37, 0.42), (0.5, 0.48), (0.64, 0.38), (0.64, 0.3), (0.63, 0.55),
         (0.6, 0.86)]],
}


def browser():
    """A headless Chromium or Chrome driven by Selenium, or None with the reason why not."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -r requirements.txt)"
    driver = shutil.which("chromedriver")
    if not driver and os.environ.get("CHROMEWEBDRIVER"):  # where GitHub's runners keep it
        driver = shutil.which("chromedriver", path=os.environ["CHROMEWEBDRIVER"])
    if not driver:
        return None, "no chromedriver (Debian: apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=900,800",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if binary:
        options.binary_location = binary
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=options), None
    except WebDriverException as e:  # a browser that does not start, or does not match its driver
        return None, f"{driver} did not start a browser: {e.msg}"


def write(driver, number):
    """Clears the pad, writes number (a string of digits) with the mouse as a person would (press, moves,
    release for every stroke), each digit in a square the pad's height, three quarters of it apart, and
    returns what the page then says it read."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "clear").click()
    pad = driver.find_element(By.ID, "pad")
    width, height = pad.size["width"], pad.size["height"]
    for i, digit in enumerate(number):
        left = 0.75 * height * i
        for stroke in STROKES[int(digit)]:
            points = [(round(left + x * height - width / 2), round((y - 0.5) * height)) for x, y in stroke]
            moves = ActionChains(driver, duration=20).move_to_element_with_offset(pad, *points[0]).click_and_hold()
            for a, b in itertools.pairwise(points):
                for t in (0.25, 0.5, 0.75, 1):  # several small moves along each line, as a hand makes them
                    moves.move_to_element_with_offset(pad, round(a[0] + t * (b[0] - a[0])),
                                                      round(a[1] + t * (b[1] - a[1])))
            moves.release().perform()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle")
    return driver.find_element(By.ID, "number").text
