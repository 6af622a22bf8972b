"""`python mnist.py serve`: a page to write a number on, and POST /predict, on the standard library's
threaded HTTP server. It uses mnist.py (the weights, the model's outputs) and images.py (the picture).

What it holds against (each limit below is also in `serve --help` and the README):
- other web pages: a request whose Host is not this server's address, or a POST from another Origin, is
  refused (DNS rebinding, cross-site requests); the page allows only its own script and style, and no framing;
- any body: only plain raster formats are decoded (images.FORMATS), never PostScript, within Pillow's pixel
  limit; a malformed or oversized Content-Length is answered, not dropped;
- any number of clients: each request must arrive whole within REQUEST_SECONDS; at most CLIENTS connections
  are served at once and DECODES pictures decoded at once (a decode holds up to about 0.5 GB), and a request
  that finds no room is answered 503 at once instead of waiting in a queue without end.
What it does not: authentication, encryption (no TLS), rate limits per client. It listens on 127.0.0.1 unless
--host says otherwise.
"""

import argparse
import base64
import errno
import io
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from PIL import Image

import images
import mnist

PAGE = Path(__file__).with_name("page")  # draw.html, and the script and style it loads
ASSETS = {"/": ("draw.html", "text/html; charset=utf-8"), "/draw.js": ("draw.js", "text/javascript; charset=utf-8"),
          "/draw.css": ("draw.css", "text/css; charset=utf-8")}
MAX_BODY = 5 * 2**20      # bytes a POST /predict may carry
REQUEST_SECONDS = 10      # a request's line, headers and body must all arrive within this, from its first byte
CLIENTS = 64              # connections served at once; one more is answered 503
DECODES = 2               # pictures decoded at once: peak memory stays near 1.5 GB whatever arrives
WAIT_SECONDS = 5          # how long a request waits for a decode before it is answered 503
DISCARD = 64 * 2**20      # bytes of an oversized body read and dropped so that the client gets its 413
STATUS = {images.NotAnImage: 415, images.TooLarge: 413, images.Blank: 422,  # other images.ImageError: 400
          images.TooManyDigits: 422}
HEADERS = {  # on every answer
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class Late(Exception):
    """The request did not arrive whole within REQUEST_SECONDS."""


class Deadline(io.RawIOBase):
    """A socket's incoming bytes, readable until a deadline: each read waits only for the time left."""

    def __init__(self, sock, deadline):
        self.sock, self.deadline = sock, deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Late
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise Late from None


def png_data_url(image):
    """A uint8 1×H×W tensor as a data: URL of a PNG, for a page to show."""
    buffer = io.BytesIO()
    Image.frombytes("L", image.shape[:0:-1], bytes(image.flatten().tolist())).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def port_number(text):
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0 picks a free one)")
    return int(text)


def host_check(host):
    """Whether a Host header's name (no port) may reach a server that listens on host: that address (and
    localhost, for a loopback one); for every interface (0.0.0.0, ::) any address and localhost, but no
    other name, which is what DNS rebinding needs."""
    def address(name):
        try:
            return ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return None

    bound = address(host)
    if bound is not None and bound.is_unspecified:
        return lambda name: name == "localhost" or address(name) is not None
    loopback = host.lower() == "localhost" if bound is None else bound.is_loopback

    def allowed(name):
        ip = address(name)
        return name == host.lower() or (loopback and name == "localhost") or (
            ip is not None and (ip == bound or (loopback and ip.is_loopback)))
    return allowed


def main(argv):
    p = mnist.make_parser("serve", "Serve a page where you write a number and see what the model reads, and "
                          "POST /predict.")
    p.epilog = (f"Limits: a request must arrive whole within {REQUEST_SECONDS} s (else 408); bodies of at most "
                f"{MAX_BODY:,} bytes (413) in PNG, JPEG, GIF, BMP, TIFF or WebP (415), of at most "
                f"{Image.MAX_IMAGE_PIXELS:,} pixels (413); {CLIENTS} connections at once and {DECODES} pictures "
                f"decoded at once, a request that finds no room for {WAIT_SECONDS} s gets 503; a Host that is "
                "not this server's address, or a POST from another site's page, gets 403.")
    p.add_argument("--weights", default="mnist_cnn.pt", help="(default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface, which lets "
                   "other machines in (default: %(default)s)")
    p.add_argument("--port", type=port_number, default=8000, help="(default: %(default)s; 0 picks a free one)")
    args = p.parse_args(argv)
    mnist.check_args(p, args)
    device = mnist.pick_device(args.device)
    model = mnist.load_weights(args.weights, device)
    assets = {route: ((PAGE / name).read_bytes(), kind) for route, (name, kind) in ASSETS.items()}
    host_allowed = host_check(args.host)
    decodes = threading.BoundedSemaphore(DECODES)
    lock = threading.Lock()  # one forward pass at a time

    def predict(body):
        if not decodes.acquire(timeout=WAIT_SECONDS):
            return 503, {"error": "busy: too many pictures at once; try again in a moment"}
        try:
            found = images.read_digits(io.BytesIO(body))
        except images.ImageError as e:
            return STATUS.get(type(e), 400), {"error": str(e)}
        finally:
            decodes.release()
        x = torch.stack([x for x, _ in found])
        with lock:
            probs = mnist.logits_over_views(model, x.to(device)).softmax(1).cpu()
        digits = [{"digit": p.argmax().item(), "probability": p.max().item(), "probabilities": p.tolist(), "box": box,
                   "input": png_data_url(image)} for (image, box), p in zip(found, probs)]
        answer = {"number": "".join(str(d["digit"]) for d in digits), "digits": digits}
        if len(digits) == 1:  # as before numbers were read
            answer.update({k: digits[0][k] for k in ("digit", "probability", "probabilities", "input")})
        return 200, answer

    class Handler(BaseHTTPRequestHandler):
        def setup(self):
            super().setup()
            self.rfile = io.BufferedReader(Deadline(self.connection, time.monotonic() + REQUEST_SECONDS))
            self.command, self.path, self.requestline, self.request_version = None, "", "", "HTTP/1.0"  # for an
            # answer before the request line is read

        def handle(self):
            try:
                super().handle()
            except Late:
                self.close_connection = True
                self.answer(408, {"error": f"the request did not arrive whole within {REQUEST_SECONDS} s"})
            except (ConnectionError, TimeoutError):  # the client went away
                pass

        def answer(self, status, body, kind="application/json"):
            if kind == "application/json":
                body = json.dumps(body).encode()
            self.connection.settimeout(REQUEST_SECONDS)  # the answer is small: a client that takes it this long is gone
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in HEADERS.items():
                self.send_header(name, value)
            if status == 405:
                self.send_header("Allow", "POST" if self.route() == "/predict" else "GET, HEAD")
            if status == 503:
                self.send_header("Retry-After", "1")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_error(self, code, message=None, explain=None):  # http.server's own errors, as JSON too
            self.close_connection = True
            self.answer(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def route(self):
            return self.path.split("?", 1)[0]

        def refused(self):
            """An answer for a request from where it should not come, or None."""
            host = self.headers.get("Host")
            if not host:
                return 400, {"error": "a Host header is needed"}
            name, _, port = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
            if not host_allowed(name.lower()) or (port and int(port) != self.server.server_address[1]):
                return 403, {"error": f"Host {host!r} is not this server's address"}
            origin = self.headers.get("Origin")
            if self.command == "POST" and origin is not None and origin != f"http://{host}":
                return 403, {"error": f"a POST from another site ({origin}) is refused"}
            return None

        def do_GET(self):
            if refusal := self.refused():
                return self.answer(*refusal)
            if self.route() in assets:
                self.answer(200, *assets[self.route()])
            else:
                self.refuse()

        do_HEAD = do_GET

        def refuse(self):
            if self.route() in (*assets, "/predict"):
                self.answer(405, {"error": f"{self.command} is not allowed on {self.route()}"})
            else:
                self.answer(404, {"error": f"no such page: {self.route()}"})

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = refuse

        def do_POST(self):
            if refusal := self.refused():
                return self.answer(*refusal)
            if self.route() != "/predict":
                return self.refuse()
            length = self.headers.get("Content-Length")
            if length is None:
                return self.answer(411, {"error": "the body needs a Content-Length"})
            if not re.fullmatch(r"[0-9]{1,15}", length.strip()):
                return self.answer(400, {"error": "the Content-Length is not a number of bytes"})
            if int(length) > MAX_BODY:
                self.answer(413, {"error": f"body too large: {int(length):,} bytes, at most {MAX_BODY:,}"})
                return self.discard(int(length))
            body = self.rfile.read(int(length))
            if not body:
                return self.answer(400, {"error": "empty body: send the image's bytes"})
            if len(body) < int(length):
                return self.answer(400, {"error": "the body ended before its Content-Length"})
            try:
                self.answer(*predict(body))
            except Exception as e:  # noqa: BLE001 -- a fault of ours: a 500 for this request, the server goes on
                print(f"mnist.py serve: {e!r}", file=sys.stderr)
                self.answer(500, {"error": "internal error"})

        def discard(self, length):
            """Reads and drops a refused body (up to DISCARD bytes, within the deadline), so that a client
            sending it whole reads its answer instead of finding the connection reset."""
            self.wfile.flush()
            length = min(length, DISCARD)
            try:
                while length > 0 and (chunk := self.rfile.read1(min(length, 2**16))):
                    length -= len(chunk)
            except (Late, OSError):
                pass

    class Server(ThreadingHTTPServer):
        allow_reuse_address = os.name != "nt"  # on Windows it would let a second server share the port
        request_queue_size = CLIENTS  # connections the system holds until they are accepted (5 by default)
        clients = threading.BoundedSemaphore(CLIENTS)

        def process_request(self, request, client_address):
            if self.clients.acquire(blocking=False):
                return super().process_request(request, client_address)
            try:  # no room: a short answer from here, not a thread
                body = json.dumps({"error": "busy: too many connections; try again in a moment"}).encode()
                request.settimeout(1)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.clients.release()

        def handle_error(self, request, client_address):  # a fault of ours: one line, not a traceback
            print(f"mnist.py serve: {client_address[0]}: {sys.exc_info()[1]!r}", file=sys.stderr)

    try:
        server = Server((args.host, args.port), Handler)
    except (OSError, socket.gaierror) as e:
        in_use = getattr(e, "errno", None) == errno.EADDRINUSE
        raise mnist.UserError(f"port {args.port} is in use on {args.host}: pass --port N" if in_use else
                              f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"mnist.py serve: write a number at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("mnist.py serve: stopped")
    finally:
        server.server_close()
    return 0
