"""Tests of `predict` on the images people have: drawings, transparent canvases, photos, odd formats, and
files that are not images at all. The images are made here from MNIST test digits."""

import io
import json
import math
import os
import struct
import zlib

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import mnist
from test_serve import EPS
from tools.samples import grey, ink, jpeg, photo, png, sideways, transparent

PER_GROUP = 40  # images a group; each group must be at least 90% right


def la(amount, gen):
    return png(Image.merge("LA", (grey(torch.full(amount.shape, 40.0)), grey(255 * amount))))


def palette(amount, gen):
    """A paint program's pencil: one colour, hard edges, index 0 transparent."""
    img = Image.new("P", amount.shape[::-1], 0)
    img.putpalette([255, 255, 255, 30, 60, 200])
    img.paste(1, mask=grey(255 * (amount > 0.5)))
    return png(img, transparency=0)


def large(amount, gen):
    return jpeg(photo(amount, gen).resize((4000, 3000), Image.Resampling.BILINEAR))


def sixteen_bit(amount, gen):
    values = (52_000 - 46_000 * amount).round().to(torch.int32).numpy().astype("uint16")
    return png(Image.fromarray(values))


def cmyk(amount, gen):
    return jpeg(photo(amount, gen).convert("CMYK"))


def animated(amount, gen):
    """A GIF of two frames: this digit, then a bar that reads as a 1; the first frame is the one read."""
    bar = torch.zeros(amount.shape)
    bar[amount.shape[0] // 5:-amount.shape[0] // 5, amount.shape[1] // 2 - 4:amount.shape[1] // 2 + 4] = 1
    first, second = (grey(255 - 255 * a).convert("P") for a in (amount, bar))
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=[second])
    return buffer.getvalue()


GROUPS = {  # name: (how the file is made, its suffix)
    "transparent, black ink": (transparent((0, 0, 0)), "png"),
    "transparent, white ink": (transparent((255, 255, 255)), "png"),
    "transparent, coloured ink": (transparent((220, 40, 90)), "png"),
    "LA (grey and alpha)": (la, "png"),
    "palette, transparent index": (palette, "png"),
    "photo, uneven light and noise": (lambda a, gen: jpeg(photo(a, gen)), "jpg"),
    "photo stored sideways, EXIF": (sideways, "jpg"),
    "photo, 12 megapixels": (large, "jpg"),
    "16-bit grey": (sixteen_bit, "png"),
    "CMYK photo": (cmyk, "jpg"),
    "animated GIF, first frame": (animated, "gif"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data):
    """{group: (paths, labels)}: PER_GROUP test digits a group (10 of the 12-megapixel ones), each drawn
    at its own size and place."""
    images, labels = data["test"]
    root = tmp_path_factory.mktemp("corpus")
    gen = torch.Generator().manual_seed(0)
    out = {}
    for g, (name, (make, suffix)) in enumerate(GROUPS.items()):
        count = 10 if "megapixels" in name else PER_GROUP
        first = 1000 + g * PER_GROUP  # each group its own digits
        paths = []
        for i in range(first, first + count):
            scale = int(torch.randint(3, 10, (), generator=gen))
            margins = torch.randint(4, 60, (4,), generator=gen).tolist()
            paths.append(root / f"{g}-{i}.{suffix}")
            paths[-1].write_bytes(make(ink(images[i], scale, margins), gen))
        out[name] = paths, labels[first:first + count].tolist()
    return out


@pytest.mark.parametrize("group", GROUPS)
def test_predict_reads_each_kind_of_image(group, corpus, trained, capsys):
    paths, labels = corpus[group]
    assert mnist.main(["predict", *map(str, paths), "--weights", str(trained[1]), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert sum(a["digit"] == label for a, label in zip(answers, labels)) >= 0.9 * len(labels)


def test_the_corpus_is_what_its_groups_say(corpus):
    def opened(group):
        return Image.open(corpus[group][0][0])

    assert opened("transparent, coloured ink").mode == "RGBA"
    assert opened("palette, transparent index").mode == "P"
    assert opened("LA (grey and alpha)").mode == "LA"
    assert opened("16-bit grey").mode.startswith("I;16")
    assert opened("CMYK photo").mode == "CMYK"
    assert opened("photo, 12 megapixels").size == (4000, 3000)
    assert getattr(opened("animated GIF, first frame"), "n_frames", 1) == 2
    assert opened("photo stored sideways, EXIF").getexif()[0x0112] == 6


def render(image, path, scale, dy, dx):
    """A test digit as a photo-like picture: black ink on white paper, larger, off-centre, in colour."""
    big = F.interpolate(image[None].float(), scale_factor=scale, mode="bilinear")[0, 0]
    canvas = torch.full((28 * scale + 40, 28 * scale + 60), 255.0)
    canvas[dy:dy + 28 * scale, dx:dx + 28 * scale] = 255 - big
    Image.fromarray(canvas.clamp(0, 255).byte().numpy()).convert("RGB").save(path)


def test_predict_reads_digits_drawn_as_mnist_was_made(trained, data, tmp_path, capsys):
    _, weights, _ = trained
    images, labels = data["test"]
    gen = torch.Generator().manual_seed(0)
    paths = []
    for i in range(300):
        scale, dy, dx = (int(v) for v in (torch.randint(2, 6, (1,), generator=gen), torch.randint(0, 40, (1,), generator=gen),
                                          torch.randint(0, 60, (1,), generator=gen)))
        paths.append(tmp_path / f"{i}.png")
        render(images[i], paths[-1], scale, dy, dx)
    show = tmp_path / "seen.png"
    assert mnist.main(["predict", *map(str, paths), "--weights", str(weights), "--json", "--show", str(show)]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["path"] for a in answers] == list(map(str, paths))
    correct = sum(a["digit"] == label for a, label in zip(answers, labels[:300].tolist()))
    assert correct >= 0.97 * 300
    with Image.open(show) as seen:  # the 300 inputs the model saw: 28×28 each, 8 a row, 2-pixel gaps
        assert seen.size == (2 + 8 * 30, 2 + math.ceil(300 / 8) * 30)


def png_of_size(width, height):
    """A PNG that says it is width×height pixels but holds almost nothing: enough for Pillow to open it."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # as images.py has it: it says so itself
def test_predict_reports_each_bad_file_and_goes_on(trained, data, tmp_path, monkeypatch, capsys):
    render(data["test"][0][0], tmp_path / "seven.png", 3, 5, 5)
    whole = (tmp_path / "seven.png").read_bytes()
    files = {  # name: (bytes, or None for no file, the error expected)
        "seven.png": (whole, None),
        "blank.png": (png(Image.new("L", (40, 30), 255)), "blank image: no ink found"),
        "notes.png": (b"not an image", "not a PNG, JPEG, GIF, BMP, TIFF or WebP image"),
        "one.eps": (EPS, "not a PNG, JPEG, GIF, BMP, TIFF or WebP image"),  # Pillow alone would run Ghostscript
        "empty.png": (b"", "empty file"),
        "cut.png": (whole[:len(whole) // 2], "damaged or truncated image"),
        "cut.jpg": (jpeg(Image.open(io.BytesIO(whole)))[:600], "damaged or truncated image"),
        "huge.png": (png_of_size(16_000, 16_000), "image too large: over 89,478,485 pixels"),
        "large.png": (png_of_size(9_000, 11_000), "image too large: 9000×11000 pixels, over 89,478,485"),
        "locked.png": (whole, "cannot be read: permission denied"),
        "missing.png": (None, "no such file"),
    }
    for name, (content, _) in files.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    (tmp_path / "a folder").mkdir()
    files["a folder"] = (None, "a folder, not an image")
    if hasattr(os, "mkfifo"):  # a named pipe would keep Pillow waiting for ever
        os.mkfifo(tmp_path / "a pipe")
        files["a pipe"] = (None, "not a regular file (a pipe, socket or device)")
    real_open = Image.open

    def locked_open(source, *args, **kwargs):  # as root, chmod would not lock a file
        if str(source).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(source))
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(Image, "open", locked_open)
    code = mnist.main(["predict", *(str(tmp_path / name) for name in files), "--weights", str(trained[1]), "--json"])
    answers = json.loads(capsys.readouterr().out)
    assert code == 1
    assert answers[0]["digit"] == 7
    assert [a.get("error") for a in answers] == [error for _, error in files.values()]


def bordered(amount, gen, width=3):
    """Black ink on white paper, opaque, inside a transparent border (a screenshot's, or a sticker's)."""
    img = Image.merge("RGBA", [grey(255 - 255 * amount)] * 3 + [Image.new("L", amount.shape[::-1], 255)])
    alpha = Image.new("L", img.size, 0)
    alpha.paste(255, (width, width, img.width - width, img.height - width))
    img.putalpha(alpha)
    return png(img)


def rounded(amount, gen):
    """White ink on a dark page (a screenshot in dark mode) with transparent rounded corners."""
    from PIL import ImageDraw

    img = Image.merge("RGBA", [grey(30 + 225 * amount)] * 3 + [Image.new("L", amount.shape[::-1], 0)])
    alpha = Image.new("L", img.size, 0)
    ImageDraw.Draw(alpha).rounded_rectangle((0, 0, img.width - 1, img.height - 1), radius=min(img.size) // 5, fill=255)
    img.putalpha(alpha)
    return png(img)


@pytest.mark.parametrize("make", [bordered, rounded])
def test_an_opaque_picture_with_transparent_edges_is_read_as_the_picture(make, trained, data, tmp_path, capsys):
    images, labels = data["test"]
    gen = torch.Generator().manual_seed(4)
    paths = []
    for i in range(4000, 4040):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(make(ink(images[i], 3, [2, 2, 2, 2]), gen))
    assert mnist.main(["predict", *map(str, paths), "--weights", str(trained[1]), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert sum(a["digit"] == label for a, label in zip(answers, labels[4000:4040].tolist())) >= 0.9 * 40


def test_predict_prints_one_line_per_image_and_an_error_line(trained, data, tmp_path, capsys):
    render(data["test"][0][0], tmp_path / "seven.png", 3, 5, 5)
    code = mnist.main(["predict", str(tmp_path / "seven.png"), str(tmp_path / "gone.png"), "--weights",
                       str(trained[1])])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'seven.png'}: 7 (") and lines[1].endswith("gone.png: error: no such file")
