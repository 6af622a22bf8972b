"""Tests of `python mnist.py serve`: the JSON endpoint over HTTP, and the page in a real browser.

The browser test drives headless Chromium (or Chrome) through its driver. Where neither is installed it
is skipped with its reason, unless MNIST_REQUIRE_BROWSER=1 (set by .ci/run), which makes it fail instead.
"""

import base64
import io
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from tools.browser import STROKES, browser, start, write
from tools.samples import ink, jpeg, photo, png, transparent

HERE = Path(__file__).parent


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


def authority(url):
    """host:port of a URL, as a Host header says it."""
    return url.split("//")[1].strip("/")


def connect(url):
    host, port = authority(url).rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def read_answer(sock):
    """(status, parsed JSON body) of the answer on a socket, read as far as its Content-Length."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
        answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return int(head.split()[1]), json.loads(body)


def raw_request(url, text):
    """Sends text as the request as it is (HOST stands for the server's host:port); returns the status and
    the JSON body of the answer."""
    with connect(url) as s:
        s.sendall(text.replace("HOST", authority(url)).encode("latin-1"))
        return read_answer(s)


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
    assert all(f'id="{name}"' in page for name in ("pad", "undo", "clear", "number", "digits"))
    assert "http://" not in page and "https://" not in page  # works offline: nothing fetched from elsewhere


def test_predict_reads_drawings_and_photos(server, data):
    images = digits(data, 2000, 40, torch.Generator().manual_seed(1))
    answers = [request(server + "predict", body, "POST", {"Content-Type": "image/png"}) for body, _ in images]
    assert all(status == 200 for status, _, _ in answers)
    assert sum(a["digit"] == label for (_, a, _), (_, label) in zip(answers, images)) >= 0.95 * len(images)
    a = answers[0][1]
    assert set(a) == {"number", "digits", "digit", "probability", "probabilities", "input"}  # one digit: as before,
    assert a["number"] == str(a["digit"]) and len(a["digits"]) == 1                          # and as a number
    assert a["digits"][0] == {k: a[k] for k in ("digit", "probability", "probabilities", "input")} | {
        "box": a["digits"][0]["box"]}
    assert len(a["probabilities"]) == 10 and math.isclose(sum(a["probabilities"]), 1, rel_tol=1e-4)
    assert a["probability"] == max(a["probabilities"]) and a["digit"] == a["probabilities"].index(a["probability"])
    assert a["input"].startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(a["input"].split(",")[1]))) as seen:
        assert seen.size == (28, 28) and seen.mode == "L"


def test_every_bad_request_is_refused_with_json(server):
    cases = [  # (what is sent, the status expected)
        (request(server + "predict", b"not an image", "POST"), 415),
        (request(server + "predict", png(Image.new("L", (50, 50), 255))[:60], "POST"), 400),  # truncated
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
    status, answer = raw_request(server, "POST /predict HTTP/1.1\r\nHost: HOST\r\nContent-Length: 6000000\r\n\r\n")
    assert status == 413 and "too large" in answer["error"]
    status, answer = raw_request(server, "POST /predict HTTP/1.1\r\nHost: HOST\r\n\r\n")
    assert status == 411 and answer["error"]
    status, answer = raw_request(server, "BREW /predict HTTP/1.1\r\nHost: HOST\r\n\r\n")
    assert status == 501 and answer["error"]
    for length in ("\u00b2", "9" * 5000, "-1", "1e3", "0x10", "12, 12"):  # ² passes str.isdigit, not int()
        text = f"POST /predict HTTP/1.1\r\nHost: HOST\r\nContent-Length: {length}\r\n\r\n"
        status, answer = raw_request(server, text)
        assert status == 400 and "Content-Length" in answer["error"], length
    assert request(server)[0] == 200  # still serving


def test_other_hosts_and_other_sites_are_refused(server, data):
    body = digits(data, 2100, 1, torch.Generator().manual_seed(3))[0][0]
    port = authority(server).rsplit(":", 1)[1]
    for host, expected in [(f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), (f"attacker.example:{port}", 403),
                           ("127.0.0.1:1", 403), (f"[::1]:{port}", 200), (f"127.0.0.1.attacker.example:{port}", 403)]:
        status, answer = raw_request(server, f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n") if expected != 200 else (
            request(server, headers={"Host": host})[:2])
        assert status == expected, host
        if expected == 403:  # DNS rebinding: a name that points here reads nothing
            assert host in answer["error"]
    assert raw_request(server, "GET / HTTP/1.0\r\n\r\n")[0] == 400  # no Host at all
    same = {"Origin": server.rstrip("/"), "Content-Type": "text/plain"}
    assert request(server + "predict", body, "POST", same)[0] == 200
    for origin in ("http://attacker.example", "null", f"http://localhost:{port}.attacker.example"):
        status, answer, _ = request(server + "predict", body, "POST", {"Origin": origin, "Content-Type": "text/plain"})
        assert status == 403 and "another site" in answer["error"]


def test_the_page_runs_only_its_own_script_and_style_and_is_not_framed(server):
    _, page, head = request(server)
    policy = dict(part.strip().split(" ", 1) for part in head["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'" and head["X-Frame-Options"] == "DENY"
    assert "<script>" not in page and "<style>" not in page and not re.search(r"\s(style|on\w+)=", page)
    for asset, kind in (("draw.js", "text/javascript"), ("draw.css", "text/css")):
        status, _, head = request(server + asset)
        assert status == 200 and head["Content-Type"].startswith(kind)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n1 setgray 0 0 100 100 rectfill\n" \
      b"0 setgray 12 setlinewidth 50 10 moveto 50 90 lineto stroke showpage\n"  # a 1, drawn by PostScript


def test_postscript_is_never_read(server):
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # Pillow alone would take it, and run Ghostscript on it:
    if shutil.which("gs"):  # where Ghostscript is installed (.ci/run installs it), that is what it would do
        assert Image.open(io.BytesIO(EPS)).convert("L").getextrema() == (0, 255)
    status, answer, _ = request(server + "predict", EPS, "POST")
    assert status == 415 and "PNG, JPEG, GIF, BMP, TIFF or WebP" in answer["error"]


def test_an_oversized_body_sent_whole_gets_its_413(server):
    with connect(server) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: {authority(server)}\r\nContent-Length: 6000000\r\n\r\n".encode())
        s.sendall(b"\0" * 6_000_000)  # as a client that does not wait for an answer before sending
        status, answer = read_answer(s)
    assert status == 413 and "too large" in answer["error"]


def test_slow_and_surplus_clients_are_answered_and_let_go(trained):
    """Clients that send a byte a second get 408 once the whole-request deadline passes; while they hold
    every connection the server serves, one more gets 503 at once; then the server serves again."""
    import serve

    proc, url = start("--weights", str(trained[1]), "--port", "0")
    try:
        def slow(k):
            with connect(url) as s:
                begun = time.monotonic()
                s.sendall(f"POST /predict HTTP/1.1\r\nHost: {authority(url)}\r\nContent-Length: 100\r\n\r\n".encode())
                try:
                    while not select.select([s], [], [], 1)[0]:
                        s.sendall(b"x")
                    return read_answer(s)[0], time.monotonic() - begun
                except OSError:
                    return None, time.monotonic() - begun

        with ThreadPoolExecutor(serve.CLIENTS) as pool:
            slow_ones = [pool.submit(slow, k) for k in range(serve.CLIENTS)]
            time.sleep(2)
            begun = time.monotonic()
            assert raw_request(url, "GET / HTTP/1.1\r\nHost: HOST\r\n\r\n")[0] == 503
            assert time.monotonic() - begun < 1
            answers = [f.result() for f in slow_ones]
        assert all(status == 408 and seconds < serve.REQUEST_SECONDS + 3 for status, seconds in answers), answers
        assert request(url)[0] == 200
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
def test_sixteen_huge_pictures_at_once_keep_memory_bounded(trained):
    """16 POSTs at once of a 64-megapixel 16-bit PNG (140 KB each, 128 MB decoded)."""
    picture = Image.new("I;16", (8000, 8000), 50_000)
    picture.paste(1_000, (3000, 3900, 5000, 4100))
    body = png(picture)
    proc, url = start("--weights", str(trained[1]), "--port", "0")
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: request(url + "predict", body, "POST")[0], range(16)))
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{proc.pid}/status").read_text()).group(1)) / 2**20
        assert set(statuses) <= {200, 503} and 200 in statuses
        assert peak < 2.0, f"peak {peak:.2f} GB"
    finally:
        proc.kill()
        proc.wait()


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


def other_site(html):
    """The URL of a page of html served by another server, on another port of this machine."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html.encode())

        def log_message(self, *args):
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{site.server_address[1]}/"


def test_numbers_written_with_the_mouse_in_a_browser_read_right(server, tmp_path):
    driver, why = browser()
    if driver is None:
        if os.environ.get("MNIST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MNIST_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(server)
        read = {str(d): write(driver, str(d)) for d in STROKES}
        numbers = {n: write(driver, n) for n in ("42", "2026", "13579", "8640")}
        cards = driver.find_elements(By.CSS_SELECTOR, "#digits .digit")
        shown = [card.find_element(By.TAG_NAME, "b").text for card in cards]
        seen = [card.find_element(By.TAG_NAME, "img").get_attribute("src") for card in cards]
        bars = [len(card.find_elements(By.CSS_SELECTOR, ".bars span")) for card in cards]
        pad, left = driver.find_element(By.ID, "pad").rect, [card.rect["x"] + card.rect["width"] / 2 for card in cards]
        driver.save_screenshot(str(tmp_path / "page.png"))
        driver.find_element(By.ID, "undo").click()  # the 0's one stroke taken back: 864
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle")
        undone = driver.find_element(By.ID, "number").text
        driver.find_element(By.ID, "clear").click()
        cleared = driver.find_element(By.ID, "number").text, driver.find_elements(By.CSS_SELECTOR, "#digits .digit")
        # another site's page (another port) that frames this one: the browser shows it nothing
        driver.get(other_site(f"<iframe id=other src='{server}' width=600 height=600></iframe>"))
        driver.switch_to.frame("other")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(
            "return document.URL != 'about:blank' && document.readyState == 'complete'"))
        framed = driver.find_elements(By.ID, "pad")
    finally:
        driver.quit()
    assert read == {str(d): str(d) for d in STROKES}
    assert numbers == {n: n for n in numbers}
    assert shown == list("8640") and bars == [10] * 4 and all(s.startswith("data:image/png;base64,") for s in seen)
    # each digit's answer under where it was written: the k-th digit's middle at about (0.5 + 0.75 k) pad heights
    assert all(abs(x - pad["x"] - (0.5 + 0.75 * k) * pad["height"]) < 0.25 * pad["height"] for k, x in enumerate(left))
    assert undone == "864" and cleared == ("?", [])
    assert framed == []
