"""Tests of `python mnist.py serve`: the JSON endpoint over HTTP, and the page in a real browser.

The browser test drives headless Chromium (or Chrome) through its driver. Where neither is installed it
is skipped with its reason, unless MNIST_REQUIRE_BROWSER=1 (set by .ci/run), which makes it fail instead.
"""

import base64
import io
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_images import ink, jpeg, photo, png, transparent

HERE = Path(__file__).parent


def start(*args):
    """Starts mnist.py serve on a free port; returns (process, base URL), or (process, None) if it exited."""
    proc = subprocess.Popen([sys.executable, str(HERE / "mnist.py"), "serve", "--device", "cpu", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "mnist.py serve: draw a digit at http://127.0.0.1:PORT/ (Ctrl-C stops)"
    if not line:
        return proc, None
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # the request log, drained
    return proc, line.split(" at ")[1].split()[0]


@pytest.fixture(scope="module")
def server(trained):
    proc, url = start("--weights", str(trained[1]), "--port", "0")
    assert url, proc.stderr.read()
    yield url
    proc.kill()
    proc.wait()


def request(url, body=None, method=None, headers=None):
    """(status, parsed JSON or text, headers) of one HTTP request."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, raw, head = e.code, e.read(), e.headers
    return status, json.loads(raw) if head.get("Content-Type") == "application/json" else raw.decode(), head


def raw_request(url, text):
    """Sends text as the request as it is (a body that is never sent, a header left out); returns the
    status and the JSON body of the answer."""
    host, port = url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(text.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def digits(data, first, count, gen):
    """count test digits from first on, half as transparent canvas drawings, half as photos: (bytes, label)."""
    images, labels = data["test"]
    out = []
    for i in range(first, first + count):
        amount = ink(images[i], int(torch.randint(3, 9, (), generator=gen)),
                     torch.randint(4, 50, (4,), generator=gen).tolist())
        out.append((transparent((0, 0, 0))(amount, gen) if i % 2 else jpeg(photo(amount, gen)), labels[i].item()))
    return out


def test_the_page_is_served(server):
    status, page, head = request(server)
    assert status == 200 and head["Content-Type"].startswith("text/html")
    assert all(f'id="{name}"' in page for name in ("pad", "clear", "digit", "bars", "seen"))
    assert "http://" not in page and "https://" not in page  # works offline: nothing fetched from elsewhere


def test_predict_reads_drawings_and_photos(server, data):
    images = digits(data, 2000, 40, torch.Generator().manual_seed(1))
    answers = [request(server + "predict", body, "POST", {"Content-Type": "image/png"}) for body, _ in images]
    assert all(status == 200 for status, _, _ in answers)
    assert sum(a["digit"] == label for (_, a, _), (_, label) in zip(answers, images)) >= 0.95 * len(images)
    a = answers[0][1]
    assert set(a) == {"digit", "probability", "probabilities", "input"}
    assert len(a["probabilities"]) == 10 and math.isclose(sum(a["probabilities"]), 1, rel_tol=1e-4)
    assert a["probability"] == max(a["probabilities"]) and a["digit"] == a["probabilities"].index(a["probability"])
    assert a["input"].startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(a["input"].split(",")[1]))) as seen:
        assert seen.size == (28, 28) and seen.mode == "L"


def test_every_bad_request_is_refused_with_json(server):
    cases = [  # (what is sent, the status expected)
        (request(server + "predict", b"not an image", "POST"), 400),
        (request(server + "predict", b"", "POST"), 400),
        (request(server + "predict", png(Image.new("L", (50, 50), 255)), "POST"), 422),
        (request(server + "predict", png(Image.new("L", (9000, 11000), 255)), "POST"), 413),
        (request(server + "nothing-here"), 404),
        (request(server + "predict"), 405),
        (request(server, b"x", "POST"), 405),
        (request(server + "predict", b"x", "PUT"), 405),
    ]
    for (status, answer, _), expected in cases:
        assert status == expected and isinstance(answer, dict) and answer["error"]
    # a body over 5 MB is refused from its Content-Length alone: the body is never sent here
    status, answer = raw_request(server, "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000\r\n\r\n")
    assert status == 413 and "too large" in answer["error"]
    status, answer = raw_request(server, "POST /predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and answer["error"]
    status, answer = raw_request(server, "BREW /predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 501 and answer["error"]
    assert request(server)[0] == 200  # still serving


def test_sixteen_clients_at_once_are_all_answered(server, data):
    images = digits(data, 3000, 16, torch.Generator().manual_seed(2))
    bad = [b"junk", png(Image.new("L", (30, 30), 0))]

    def client(k):
        out = []
        for n in range(200 // 16 + (k < 200 % 16)):  # 200 requests in all, one in ten bad
            body = bad[n % 2] if n % 10 == 9 else images[(k + n) % 16][0]
            out.append(request(server + "predict", body, "POST")[0])
        return out

    with ThreadPoolExecutor(16) as pool:
        statuses = [s for out in pool.map(client, range(16)) for s in out]
    assert len(statuses) == 200 and set(statuses) <= {200, 400, 422} and statuses.count(200) >= 180
    assert request(server)[0] == 200


@pytest.mark.parametrize("args, message", [
    (["--weights", "no-such.pt"], "no weights in no-such.pt: train first with python mnist.py"),
    (["--port", "http"], "is not a port number"),
    (["--host", "no.such.host.invalid"], "cannot listen on no.such.host.invalid"),
])
def test_serve_refuses_bad_flags_in_one_line(args, message, trained, tmp_path):
    proc, url = start(*(["--weights", str(trained[1])] if "--weights" not in args else []), *args)
    err = proc.stderr.read()
    assert url is None and proc.wait() == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_port_in_use_is_refused_in_one_line(trained, server):
    port = server.rsplit(":", 1)[1].strip("/")
    proc, url = start("--weights", str(trained[1]), "--port", port)
    err = proc.stderr.read()
    assert url is None and proc.wait() == 2 and f"port {port} is in use" in err


@pytest.mark.skipif(os.name == "nt", reason="Ctrl-C cannot be sent to one process on Windows")
def test_ctrl_c_stops_the_server_cleanly(trained):
    proc, url = start("--weights", str(trained[1]), "--port", "0")
    assert request(url)[0] == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0 and "stopped" in proc.stdout.read()


# ---------------------------------------------------------------- the page in a real browser

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


def draw(driver, digit):
    """Clears the pad, draws digit with the mouse as a person would (press, moves, release for every
    stroke) and returns what #digit then says."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "clear").click()
    pad = driver.find_element(By.ID, "pad")
    size = pad.size["width"]
    for stroke in STROKES[digit]:
        points = [(round((x - 0.5) * size), round((y - 0.5) * size)) for x, y in stroke]
        moves = ActionChains(driver, duration=20).move_to_element_with_offset(pad, *points[0]).click_and_hold()
        for a, b in itertools.pairwise(points):
            for t in (0.25, 0.5, 0.75, 1):  # several small moves along each line, as a hand makes them
                moves.move_to_element_with_offset(pad, round(a[0] + t * (b[0] - a[0])), round(a[1] + t * (b[1] - a[1])))
        moves.release().perform()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle")
    return driver.find_element(By.ID, "digit").text


def test_digits_drawn_with_the_mouse_in_a_browser_read_right(server, tmp_path):
    driver, why = browser()
    if driver is None:
        if os.environ.get("MNIST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MNIST_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    try:
        driver.get(server)
        read = {d: draw(driver, d) for d in STROKES}
        driver.save_screenshot(str(tmp_path / "page.png"))
        from selenium.webdriver.common.by import By

        bars = driver.find_elements(By.CSS_SELECTOR, "#bars li")
        seen = driver.find_element(By.ID, "seen").get_attribute("src")
    finally:
        driver.quit()
    assert read == {d: str(d) for d in STROKES}
    assert len(bars) == 10 and seen.startswith("data:image/png;base64,")
