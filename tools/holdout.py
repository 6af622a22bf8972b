"""A held-out check of reading people's images, made apart from the tests: other digits (test images
5000-9999), other pens (thicker, rotated, stretched), other paper and light (texture, a shadow's edge, a
cosine fall-off), other JPEG qualities, both EXIF turns. Reports the share read right in each kind, by
`predict` and over HTTP through `serve`.

    python tools/holdout.py --weights mnist_cnn.pt [--per-kind 60] [--seed 2026]
"""

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mnist


def pen(digit, gen):
    """A test digit redrawn: bolder or finer, turned by up to 12°, stretched by up to 15%, 60-300 pixels
    tall, on a margin of its own. Ink 0 to 1, H×W."""
    r = torch.rand(6, generator=gen)
    x = digit[None].float() / 255
    if r[0] < 0.4:  # a marker: bolder
        x = F.max_pool2d(x, 3, stride=1, padding=1)
    elif r[0] > 0.8:  # a fine pen
        x = (x - 0.3).clamp(min=0) / 0.7
    angle, stretch = (r[1] - 0.5) * math.radians(24), 0.85 + 0.3 * r[2]
    theta = torch.tensor([[math.cos(angle) * stretch, -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0]])
    x = F.grid_sample(x, F.affine_grid(theta[None], x.shape, align_corners=False), align_corners=False)
    size = int(60 + 240 * r[3])
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)[0, 0]
    m = int(size * (0.1 + 0.5 * r[4]))
    return F.pad(x, (m, int(m * (0.5 + r[5])), int(m * (1.5 - r[5])), m))


def u8(t):
    return Image.fromarray(t.clamp(0, 255).round().byte().numpy())


def paper_photo(amount, gen):
    """Ink on textured paper under a cosine fall-off of light and a soft shadow edge across a corner."""
    h, w = amount.shape
    r = torch.rand(10, generator=gen)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    light = 0.55 + 0.45 * torch.cos(math.pi * (0.3 + 0.4 * r[0]) * ((x - r[1]) ** 2 + (y - r[2]) ** 2).sqrt())
    edge = (x * math.cos(6.3 * r[3]) + y * math.sin(6.3 * r[3]) - (0.5 + 0.4 * r[4])) / 0.05
    light = light * (1 - (0.35 + 0.25 * r[5]) * torch.sigmoid(edge))  # a shadow over one side
    texture = F.interpolate(torch.randn(1, 1, h // 8 + 2, w // 8 + 2, generator=gen), size=(h, w), mode="bilinear")[0, 0]
    paper = torch.tensor([235.0, 228.0, 210.0]) - 30 * r[6:9]
    ink_colour = torch.tensor([30.0, 30.0, 90.0]) * r[9]
    rgb = paper[:, None, None] * (1 + 0.04 * texture) * (1 - amount) + ink_colour[:, None, None] * amount
    rgb = rgb * light + 6 * torch.randn(3, h, w, generator=gen)
    return Image.merge("RGB", [u8(c) for c in rgb])


def encode(img, fmt, **options):
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def canvas(amount, gen):
    """A web canvas: transparent, strokes of one random colour with anti-aliased alpha."""
    colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=gen))
    img = Image.new("RGBA", amount.shape[::-1], colour + (0,))
    img.putalpha(u8(255 * amount))
    return encode(img, "PNG")


def portrait(amount, gen):
    turn, tag = ((Image.Transpose.ROTATE_90, 6), (Image.Transpose.ROTATE_270, 8))[int(torch.randint(0, 2, (), generator=gen))]
    exif = Image.Exif()
    exif[0x0112] = tag
    return encode(paper_photo(amount, gen).transpose(turn), "JPEG", quality=75, exif=exif.tobytes())


KINDS = {
    "canvas (transparent PNG)": canvas,
    "chalk on a dark board": lambda a, gen: encode(u8(40 + 150 * a + 8 * torch.randn(a.shape, generator=gen)), "PNG"),
    "photo (JPEG, shadow, texture)": lambda a, gen: encode(paper_photo(a, gen), "JPEG",
                                                           quality=int(torch.randint(60, 96, (), generator=gen))),
    "phone portrait (EXIF 6 or 8)": portrait,
    "photo, 12 megapixels": lambda a, gen: encode(paper_photo(a, gen).resize((3000, 4000)), "JPEG", quality=90),
    "16-bit scan": lambda a, gen: encode(Image.fromarray((60_000 - 50_000 * a).round().int().numpy().astype("uint16")),
                                         "PNG"),
    "palette GIF": lambda a, gen: encode(u8(255 - 255 * a).convert("P"), "GIF"),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="mnist_cnn.pt")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    p.add_argument("--per-kind", type=int, default=60)
    p.add_argument("--seed", type=int, default=2026, help="which images (2026 was looked at while building)")
    args = p.parse_args()
    images, labels = mnist.load_mnist(args.data_dir, ["test"])["test"]
    gen = torch.Generator().manual_seed(args.seed)
    server = subprocess.Popen([sys.executable, str(ROOT / "mnist.py"), "serve", "--weights", args.weights, "--port", "0",
                               "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = server.stdout.readline().split(" at ")[1].split()[0]
    totals = {"predict": 0, "HTTP": 0}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k, (kind, make) in enumerate(KINDS.items()):
                count = args.per_kind // 6 if "megapixels" in kind else args.per_kind
                picks = torch.randint(5000, 10_000, (count,), generator=gen).tolist()
                files = []
                for i in picks:
                    files.append(Path(tmp) / f"{k}-{i}")
                    files[-1].write_bytes(make(pen(images[i], gen), gen))
                out = subprocess.run([sys.executable, str(ROOT / "mnist.py"), "predict", *map(str, files), "--weights",
                                      args.weights, "--json"], capture_output=True, text=True, check=False).stdout
                by_cli = sum(a.get("number") == str(labels[i].item()) for a, i in zip(json.loads(out), picks))
                by_http = 0
                for f, i in zip(files, picks):
                    try:
                        with urllib.request.urlopen(urllib.request.Request(url + "predict", f.read_bytes())) as r:
                            by_http += json.load(r)["number"] == str(labels[i].item())
                    except urllib.error.HTTPError:
                        pass
                totals["predict"] += by_cli
                totals["HTTP"] += by_http
                totals["count"] = totals.get("count", 0) + count
                print(f"{kind:32s} {count:4d} images: predict {100 * by_cli / count:5.1f}%  HTTP {100 * by_http / count:5.1f}%",
                      flush=True)
    finally:
        server.kill()
    n = totals["count"]
    print(f"{'all':32s} {n:4d} images: predict {100 * totals['predict'] / n:5.1f}%  HTTP {100 * totals['HTTP'] / n:5.1f}%")


if __name__ == "__main__":
    main()
