"""Makes the README's pictures with the project's own code, from trained weights.

    python mnist.py                                    # weights in mnist_cnn.pt
    python mnist.py evaluate --errors docs/errors.png  # the misclassified test digits
    python tools/pictures.py                            # docs/deskew.png, docs/photo.png, docs/serve.png

The photos are made as the tests make them (tools/samples.py), and the page is driven as the browser
test drives it (tools/browser.py): headless Chromium and its driver must be installed for docs/serve.png.
"""

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mnist
from tools.browser import browser, start, write
from tools.samples import ink, jpeg, photo, sideways


def enlarge(images, k):
    return F.interpolate(images.float(), scale_factor=k, mode="nearest").round().byte()


def deskew_picture(images, path):
    """The twelve most slanted of the first 1,000 test digits: as written (top), deskewed (bottom)."""
    x = images[:1000].float() / 255
    w = x[:, 0]
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    m = w.sum((1, 2))
    cy, cx = (w * ys).sum((1, 2)) / m, (w * xs).sum((1, 2)) / m
    dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
    slant = (w * dy * dx).sum((1, 2)) / (w * dy**2).sum((1, 2))
    pick = slant.abs().argsort(descending=True)[:12]
    after = (mnist.deskew(x[pick]) * 255).round().byte()
    mnist.save_grid(path, enlarge(torch.cat([images[pick], after]), 3), nrow=12)


def photo_picture(images, weights, path):
    """Three photos of test digits (uneven light, noise; the last stored sideways with an EXIF tag), and
    below each the 28×28 image predict made of it (--show)."""
    gen = torch.Generator().manual_seed(5)
    tiles, seen = [], []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n, i in enumerate((4321, 1234, 2024)):
            amount = ink(images[i], 8, [40, 60, 30, 50])
            data = sideways(amount, gen) if n == 2 else jpeg(photo(amount, gen))
            paths.append(Path(tmp) / f"photo{n}.jpg")
            paths[-1].write_bytes(data)
            tile = Image.open(io.BytesIO(data)).convert("RGB")
            tile.thumbnail((220, 220))
            tiles.append(tile)
        show = Path(tmp) / "seen.png"
        assert mnist.main(["predict", *map(str, paths), "--weights", str(weights), "--show", str(show)]) == 0
        for n in range(3):
            with Image.open(show) as grid:  # save_grid: 28×28 tiles, 2-pixel gaps
                seen.append(grid.crop((2 + 30 * n, 2, 30 + 30 * n, 30)).resize((168, 168), Image.Resampling.NEAREST))
    picture = Image.new("RGB", (3 * 240, 240 + 190), "white")
    for n, (tile, small) in enumerate(zip(tiles, seen)):
        picture.paste(tile, (240 * n + (240 - tile.width) // 2, (240 - tile.height) // 2))
        picture.paste(small.convert("RGB"), (240 * n + 36, 250))
    picture.quantize(256).save(path, optimize=True)  # a small PNG


def serve_picture(weights, path):
    """The page of mnist.py serve after 2026 is written on it with the mouse."""
    proc, url = start("--weights", str(weights), "--port", "0")
    driver, why = browser()
    if driver is None:
        proc.kill()
        sys.exit(f"pictures.py: error: {why}")
    try:
        driver.set_window_size(1000, 720)
        driver.get(url)
        write(driver, "2026")
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
        proc.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="mnist_cnn.pt")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    args = p.parse_args()
    images = mnist.load_mnist(args.data_dir, ["test"])["test"][0]
    docs = ROOT / "docs"
    deskew_picture(images, docs / "deskew.png")
    photo_picture(images, args.weights, docs / "photo.png")
    serve_picture(args.weights, docs / "serve.png")
    print("wrote docs/deskew.png, docs/photo.png, docs/serve.png")


if __name__ == "__main__":
    main()
