"""Real handwriting, held out: the pen digits of writers a model never saw, drawn on canvases as people draw
on the serve page, read as `predict` reads them. Reports the share read right in each drawing style, and
for each digit.

    python mnist.py --val --out val.pt                 # trains without the writers of mnist.PEN_VAL_WRITERS
    python tools/handwriting.py --weights val.pt       # reads their digits

The styles: the page's canvas (280×280, transparent, a 20-pixel pen, the digit 140-240 pixels across,
anywhere on it); a finer pen (6-12 pixels) and a bolder one (28-40); a small digit (50-100 pixels) in a
corner; and black on white, an opaque picture. Each digit is drawn once in each style, at a size and
place of its own (seeded).
"""

import argparse
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datafiles
import images
import mnist
from tools.samples import canvas, fit

STYLES = {  # name: (pen width in pixels, the digit's longer side in pixels, in a corner, opaque ground)
    "canvas, the page's pen": ((20, 20), (140, 240), False, None),
    "finer pen": ((6, 12), (140, 240), False, None),
    "bolder pen": ((28, 40), (140, 240), False, None),
    "small, in a corner": ((20, 20), (50, 100), True, None),
    "black on white": ((20, 20), (140, 240), False, 255),
}


def strokes_of(segments, count):
    """A digit's segments (x0, y0, x1, y1) as strokes of two points each, as canvas() draws them."""
    return [[(x0, y0), (x1, y1)] for x0, y0, x1, y1 in segments[:count].tolist()]


def draw(strokes, style, gen, size=280):
    (pen_lo, pen_hi), (lo, hi), corner, ground = STYLES[style]
    r = torch.rand(5, generator=gen).tolist()
    pen = pen_lo + (pen_hi - pen_lo) * r[0]
    extent = lo + (hi - lo) * r[1]
    room = size - extent - pen
    if corner:  # 2-12 pixels from one of the four corners
        near, far = 2 + 10 * r[2], room - 2 - 10 * r[3]
        left, top = (near, near) if r[4] < 0.25 else (far, near) if r[4] < 0.5 else (near, far) if r[4] < 0.75 else (
            far, far)
    else:
        left, top = room * r[2], room * r[3]
    return canvas(fit(strokes, extent, left + pen / 2, top + pen / 2), pen=pen, size=size, ground=ground)


def read(model, pictures):
    """The digit predict reads in each picture (PNG bytes)."""
    x = torch.stack([images.prepare_image(io.BytesIO(p)) for p in pictures])
    return mnist.logits_over_views(model, x).argmax(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="val.pt", help="trained with --val (default: %(default)s)")
    p.add_argument("--per-style", type=int, default=0, help="digits a style (default: all of the writers')")
    p.add_argument("--seed", type=int, default=0, help="sizes and places")
    p.add_argument("--styles", nargs="*", default=list(STYLES), help="(default: all)")
    args = p.parse_args()
    model = mnist.load_weights(args.weights)
    pen = datafiles.load_pendigits()
    held = torch.isin(pen["writers"], torch.tensor(mnist.PEN_VAL_WRITERS)).nonzero()[:, 0]
    gen = torch.Generator().manual_seed(args.seed)
    if args.per_style:
        held = held[torch.randperm(len(held), generator=gen)[:args.per_style]]
    labels = pen["labels"][held]
    print(f"{len(held)} digits of writers {mnist.PEN_VAL_WRITERS.start}-{mnist.PEN_VAL_WRITERS.stop - 1}, "
          f"weights {args.weights}")
    worst = 100.0
    for style in args.styles:
        t = time.perf_counter()
        pictures = [draw(strokes_of(pen["segments"][i], pen["counts"][i]), style, gen) for i in held.tolist()]
        right = (read(model, pictures) == labels).float()
        per_digit = [100 * right[labels == d].mean().item() for d in range(10)]
        worst = min(worst, *per_digit)
        print(f"{style:24s} {100 * right.mean().item():6.2f}%   per digit " +
              " ".join(f"{a:5.1f}" for a in per_digit) + f"   ({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"lowest digit in any style: {worst:.1f}%")


if __name__ == "__main__":
    main()
