"""`python mnist.py serve`: a page to draw a digit on, and POST /predict, on the standard library's
threaded HTTP server. It uses mnist.py (weights, the model's outputs) and images.py (reading the picture).
"""

import argparse
import base64
import errno
import io
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

import images
import mnist

PAGE = Path(__file__).with_name("draw.html")  # the page: HTML with its script and style
MAX_BODY = 5 * 2**20                           # bytes a POST /predict may carry
STATUS = {images.TooLarge: 413, images.Blank: 422}  # any other images.ImageError is a 400


def png_data_url(image):
    """A uint8 1×H×W tensor as a data: URL of a PNG, for a page to show."""
    buffer = io.BytesIO()
    Image.frombytes("L", image.shape[:0:-1], bytes(image.flatten().tolist())).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def port_number(text):
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0 picks a free one)")
    return int(text)


def main(argv):
    p = mnist.make_parser("serve", "Serve a page where you draw a digit and see what the model reads, and "
                          "POST /predict.")
    p.add_argument("--weights", default="mnist_cnn.pt", help="(default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface, which lets "
                   "other machines in (default: %(default)s)")
    p.add_argument("--port", type=port_number, default=8000, help="(default: %(default)s; 0 picks a free one)")
    args = p.parse_args(argv)
    mnist.check_args(p, args)
    device = mnist.pick_device(args.device)
    model = mnist.load_weights(args.weights, device)
    page = PAGE.read_bytes()
    lock = threading.Lock()  # one forward pass at a time; reading the images runs in parallel

    def predict(body):
        x = images.prepare_image(io.BytesIO(body))
        with lock:
            prob = mnist.logits_over_views(model, x[None].to(device)).softmax(1)[0].cpu()
        return {"digit": prob.argmax().item(), "probability": prob.max().item(), "probabilities": prob.tolist(),
                "input": png_data_url(x)}

    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # seconds a client may stall mid-request before its thread gives up

        def answer(self, status, body, kind="application/json"):
            if kind == "application/json":
                body = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if status == 405:
                self.send_header("Allow", "POST" if self.route() == "/predict" else "GET, HEAD")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_error(self, code, message=None, explain=None):  # http.server's own errors, as JSON too
            self.close_connection = True
            self.answer(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def route(self):
            return self.path.split("?", 1)[0]

        def do_GET(self):
            if self.route() == "/":
                self.answer(200, page, "text/html; charset=utf-8")
            else:
                self.refuse()

        do_HEAD = do_GET

        def refuse(self):
            if self.route() in ("/", "/predict"):
                self.answer(405, {"error": f"{self.command} is not allowed on {self.route()}"})
            else:
                self.answer(404, {"error": f"no such page: {self.route()}"})

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = refuse

        def do_POST(self):
            if self.route() != "/predict":
                return self.refuse()
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                self.close_connection = True
                return self.answer(411 if not length else 400, {"error": "the body needs a Content-Length"})
            if int(length) > MAX_BODY:  # refused unread
                self.close_connection = True
                return self.answer(413, {"error": f"body too large: {int(length):,} bytes, at most {MAX_BODY:,}"})
            body = self.rfile.read(int(length))
            if not body:
                return self.answer(400, {"error": "empty body: send the image's bytes"})
            try:
                self.answer(200, predict(body))
            except images.ImageError as e:
                self.answer(STATUS.get(type(e), 400), {"error": str(e)})
            except Exception as e:  # noqa: BLE001 -- a fault of ours: a 500 for this request, the server goes on
                print(f"mnist.py serve: {e!r}", file=sys.stderr)
                self.answer(500, {"error": "internal error"})

    class Server(ThreadingHTTPServer):
        allow_reuse_address = os.name != "nt"  # on Windows it would let a second server share the port

        def handle_error(self, request, client_address):  # a client that went away: one line, not a traceback
            print(f"mnist.py serve: {client_address[0]}: {sys.exc_info()[1]!r}", file=sys.stderr)

    try:
        server = Server((args.host, args.port), Handler)
    except OSError as e:
        in_use = e.errno == errno.EADDRINUSE
        raise mnist.UserError(f"port {args.port} is in use on {args.host}: pass --port N" if in_use else
                              f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = server.server_address[:2]
    print(f"mnist.py serve: draw a digit at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("mnist.py serve: stopped")
    finally:
        server.server_close()
    return 0
