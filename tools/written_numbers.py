"""Numbers, held out: numbers of 1-5 digits written by pen writers a model never saw, drawn with gaps on
wide pads, read as `predict` reads them (images.read_digits), or posted to `serve`. Reports the share read
exactly and the share with the right number of digits, in each style.

    python mnist.py --val --fold 3 --out val.pt             # trains without writers 21-30 (mnist.PEN_FOLDS)
    python tools/written_numbers.py --weights val.pt      # reads numbers they wrote
    python tools/written_numbers.py --weights val.pt --serve   # the same numbers, posted to mnist.py serve

A number is one writer's digits, each 140-240 pixels high (the same size within 10%), moved up or down by up
to a tenth of it, with gaps of 10-40% of its height between the inks, on a pad 280 pixels high and as wide as
they need and a little more. The styles: the page's pad (transparent, a 20-pixel pen); black on white paper
(opaque); and a photo of a written number (ink on paper under uneven light, camera noise, JPEG).
"""

import argparse
import io
import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datafiles
import images
import mnist
from tools.handwriting import strokes_of
from tools.samples import canvas, fit, jpeg, photo

STYLES = ("pad", "white paper", "photo")
HEIGHT = 280  # the pad's height in pixels, as the serve page's


def number_picture(pen, indices, style, gen, pen_px=20, width=0):
    """A picture (bytes) of the pen digits indices written side by side with gaps, in style, on a pad at least
    width pixels wide."""
    r = lambda: torch.rand((), generator=gen).item()
    base = 140 + 100 * r()
    placed, x = [], 10 + 40 * r() + pen_px / 2
    for i in indices:
        strokes = strokes_of(pen["segments"][i], pen["counts"][i])
        xs = [p[0] for s in strokes for p in s]
        ys = [p[1] for s in strokes for p in s]
        w, h = max(xs) - min(xs), max(ys) - min(ys)
        height = base * (0.9 + 0.2 * r())
        extent = height * max(1, w / max(h, 1))  # fit scales the longer side
        scale = extent / max(w, h, 1)
        top = (HEIGHT - base) / 2 + (r() - 0.5) * 0.2 * base
        top = min(max(pen_px / 2 + 1, top), HEIGHT - h * scale - pen_px / 2 - 1)
        placed += fit(strokes, extent, x, top)
        x += w * scale + pen_px + (0.1 + 0.3 * r()) * base
    size = (max(width, round(x + 10 + 60 * r())), HEIGHT)
    if style == "pad":
        return canvas(placed, pen=pen_px, size=size)
    if style == "white paper":
        return canvas(placed, pen=pen_px, size=size, ground=255)
    return canvas(placed, pen=pen_px * (0.6 + 0.6 * r()), size=size,
                  encode=lambda img: jpeg(photo(torch.from_numpy(np.array(img.getchannel("A"))).float() / 255, gen)))


def numbers(pen, writers, count, gen):
    """count numbers of 1-5 digits, each by one of writers: [(indices, the number as a string)]."""
    out = []
    for _ in range(count):
        writer = writers[int(torch.randint(len(writers), (), generator=gen))]
        own = (pen["writers"] == writer).nonzero()[:, 0]
        length = int(torch.randint(1, 6, (), generator=gen))
        picked = own[torch.randint(len(own), (length,), generator=gen)]
        out.append((picked.tolist(), "".join(str(d) for d in pen["labels"][picked].tolist())))
    return out


def read_locally(model):
    def read(picture):
        digits = images.read_digits(io.BytesIO(picture))
        x = torch.stack([d for d, _ in digits])
        return "".join(str(d) for d in mnist.logits_over_views(model, x).argmax(1).tolist())
    return read


def read_by_serve(url):
    def read(picture):
        req = urllib.request.Request(url + "predict", data=picture, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return json.loads(response.read())["number"]
        except urllib.error.HTTPError as e:
            return "error: " + json.loads(e.read())["error"]
    return read


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="val.pt", help="trained with --val (default: %(default)s)")
    p.add_argument("--count", type=int, default=300, help="numbers a style (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which numbers, sizes and places")
    p.add_argument("--fold", type=int, choices=(1, 2, 3), default=3, help="the writers the weights never saw: "
                   "mnist.PEN_FOLDS[fold - 1] (default: %(default)s, writers 21-30)")
    p.add_argument("--styles", nargs="*", default=list(STYLES), help="(default: all)")
    p.add_argument("--serve", action="store_true", help="post each picture to mnist.py serve instead")
    args = p.parse_args()
    pen = datafiles.load_pendigits()
    writers = list(mnist.PEN_FOLDS[args.fold - 1])
    proc = None
    if args.serve:
        from tools.browser import start
        proc, url = start("--weights", args.weights, "--port", "0")
        read = read_by_serve(url)
    else:
        read = read_locally(mnist.load_weights(args.weights))
    print(f"{args.count} numbers a style by writers {writers[0]}-{writers[-1]}, weights {args.weights}"
          f"{', posted to serve' if args.serve else ''}")
    try:
        for style in args.styles:
            gen = torch.Generator().manual_seed(args.seed)  # the same numbers in each style
            t, exact, count, wrong = time.perf_counter(), 0, 0, []
            for indices, truth in numbers(pen, writers, args.count, gen):
                got = read(number_picture(pen, indices, style, gen))
                exact += got == truth
                count += len(got) == len(truth)
                if got != truth:
                    wrong.append(f"{truth}→{got}")
            print(f"{style:12s} exactly {100 * exact / args.count:5.1f}%   digits counted right "
                  f"{100 * count / args.count:5.1f}%   ({time.perf_counter() - t:.0f} s)   misread: "
                  + " ".join(wrong[:12]), flush=True)
    finally:
        if proc:
            proc.kill()


if __name__ == "__main__":
    main()
