"""Real handwriting, held out in folds: the pen digits of writers a model never saw, drawn on canvases as people
draw on the serve page, read as `predict` reads them. For each seed and each fold of ten writers
(mnist.PEN_FOLDS), a model is trained as `python mnist.py --val --fold K` trains it, without those writers
and MNIST's last 10,000, and reads their digits in each drawing style. Reports each style's share read
right as the mean and spread over the folds and seeds, each fold's mean, each digit's, and the lowest digit.

    python tools/handwriting.py --seeds 2              # the README's figures: 3 folds x 2 seeds
    python tools/handwriting.py --mnist-only           # the same, trained on MNIST alone
    python tools/handwriting.py --weights W --fold 3   # one model's reading of one fold's writers

The styles: the page's canvas (280×280, transparent, a 20-pixel pen, the digit 140-240 pixels across,
anywhere on it); a finer pen (6-12 pixels) and a bolder one (28-40); a small digit (50-100 pixels) in a
corner; and black on white, an opaque picture. Each digit is drawn once in each style, at a size and
place of its own (seeded by the fold alone, so that every model meets the same pictures).
"""

import argparse
import io
import os
import statistics
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
    """The digit predict reads in each picture (PNG bytes), as it finds digits (images.read_digits); -1 where
    it finds more than one, which is as wrong as a wrong digit."""
    found = [images.read_digits(io.BytesIO(p)) for p in pictures]
    digits = mnist.logits_over_views(model, torch.stack([f[0][0] for f in found])).argmax(1)
    return torch.where(torch.tensor([len(f) == 1 for f in found]), digits, -1)


def read_styles(model, pen, fold, styles, per_style=0):
    """{style: a 0/1 tensor, whether each of the fold's digits was read right}, and their labels."""
    held = torch.isin(pen["writers"], torch.tensor(mnist.PEN_FOLDS[fold - 1])).nonzero()[:, 0]
    gen = torch.Generator().manual_seed(fold)
    if per_style:
        held = held[torch.randperm(len(held), generator=gen)[:per_style]]
    labels = pen["labels"][held]
    out = {}
    for style in styles:
        pictures = [draw(strokes_of(pen["segments"][i], pen["counts"][i]), style, gen) for i in held.tolist()]
        out[style] = (read(model, pictures) == labels).float()
    return out, labels


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1, help="seeds 0, 1, ... for each fold (default: %(default)s)")
    p.add_argument("--mnist-only", action="store_true", help="train on MNIST alone")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    p.add_argument("--weights", help="read with these weights instead of training (with --fold)")
    p.add_argument("--fold", type=int, choices=(1, 2, 3), default=3, help="with --weights: whose digits")
    p.add_argument("--per-style", type=int, default=0, help="digits a style (default: all of the writers')")
    p.add_argument("--styles", nargs="*", default=list(STYLES), help="(default: all)")
    args = p.parse_args()
    pen = datafiles.load_pendigits()
    if args.weights:
        plan = [(None, args.fold)]
    else:
        data = mnist.load_mnist(args.data_dir)
        data["pen"] = pen
        plan = [(seed, fold) for seed in range(args.seeds) for fold in (1, 2, 3)]
    runs = []  # (fold, {style: right}, labels)
    for seed, fold in plan:
        t = time.perf_counter()
        if seed is None:
            model = mnist.load_weights(args.weights)
        else:
            cfg = mnist.Config(val=True, fold=fold, seed=seed, device="cpu", mnist_only=args.mnist_only)
            model = mnist.train_and_evaluate(cfg, data)[0]
        right, labels = read_styles(model, pen, fold, args.styles, args.per_style)
        runs.append((fold, right, labels))
        w = mnist.PEN_FOLDS[fold - 1]
        print(f"writers {w.start}-{w.stop - 1} held out" + (f", seed {seed}" if seed is not None else "") + ": " +
              ", ".join(f"{s} {100 * r.mean().item():.2f}%" for s, r in right.items()) +
              f" ({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\nover {len(runs)} runs (folds x seeds): mean ± std, each fold's mean, then each digit's mean")
    worst = 100.0
    for style in args.styles:
        acc = [100 * r[style].mean().item() for _, r, _ in runs]
        folds = [statistics.mean(a for a, (f, _, _) in zip(acc, runs) if f == k) for k in sorted({f for f, _, _ in runs})]
        per_digit = [statistics.mean(100 * r[style][labels == d].mean().item() for _, r, labels in runs)
                     for d in range(10)]
        worst = min(worst, *per_digit)
        spread = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
        print(f"{style:24s} {statistics.mean(acc):6.2f}%{spread}   folds " + " ".join(f"{a:.2f}" for a in folds) +
              "   per digit " + " ".join(f"{a:5.1f}" for a in per_digit), flush=True)
    print(f"lowest digit in any style: {worst:.1f}%")


if __name__ == "__main__":
    main()
