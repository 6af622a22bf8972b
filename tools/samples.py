"""Pictures of digits as people make them, for the tests and the tools: MNIST digits enlarged onto
photos under uneven light, transparent canvases, phone portraits. Each maker takes ink (0 to 1, H×W) and
a torch.Generator."""

import io
import math

import torch
import torch.nn.functional as F
from PIL import Image


def ink(digit, scale, margins):
    """A test digit (uint8 1×28×28) enlarged by scale, with margins (left, right, top, bottom): ink 0 to 1."""
    big = F.interpolate(digit[None].float() / 255, scale_factor=scale, mode="bilinear", align_corners=False)[0, 0]
    return F.pad(big, margins).clamp(0, 1)



def grey(t):
    return Image.fromarray(t.clamp(0, 255).round().byte().numpy())



def photo(amount, gen):
    """Dark ink on paper under uneven light: a slope across the page in a random direction, falling off
    towards the corners, camera noise. amount: ink 0 to 1, H×W. An RGB image."""
    h, w = amount.shape
    rand = torch.rand(8, generator=gen)
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    angle = 2 * math.pi * rand[0]
    light = 0.6 + 0.3 * rand[1] + 0.3 * (torch.cos(angle) * x + torch.sin(angle) * y) - 0.15 * (x**2 + y**2)
    paper = torch.tensor([225.0, 215.0, 195.0]) + 25 * rand[2:5]
    pen = 20 + 40 * rand[5]
    rgb = (paper[:, None, None] * (1 - amount) + pen * amount) * light.clamp(0.15, 1.1)
    rgb = rgb + (3 + 5 * rand[6]) * torch.randn(rgb.shape, generator=gen)
    return Image.merge("RGB", [grey(c) for c in rgb])



def jpeg(img, **options):
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=85, **options)
    return buffer.getvalue()



def png(img, **options):
    buffer = io.BytesIO()
    img.save(buffer, "PNG", **options)
    return buffer.getvalue()



def transparent(colour):
    def make(amount, gen):
        img = Image.new("RGBA", amount.shape[::-1], colour + (0,))
        img.putalpha(grey(255 * amount))
        return png(img)
    return make



def sideways(amount, gen):
    """A portrait photo as phones store it: the pixels lying on their side, an EXIF tag to turn them."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    return jpeg(photo(amount, gen).transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def canvas(strokes, pen=20, size=280, ground=None, encode=png):
    """strokes (lists of (x, y) canvas pixels) drawn as the serve page draws them: black round-capped
    lines pen pixels wide on a size×size canvas (or width×height, for a size of two), antialiased (drawn four
    times larger, then reduced). On a transparent canvas as the page's, or on an opaque ground of that grey
    (255: black on white). PNG bytes, or what encode makes of the image."""
    from PIL import ImageDraw

    k = 4
    width, height = (size, size) if isinstance(size, int) else size
    mask = Image.new("L", (k * width, k * height), 0)
    draw = ImageDraw.Draw(mask)
    r = k * pen / 2
    for stroke in strokes:
        points = [(k * x, k * y) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=round(k * pen))
        for x, y in points:  # round caps and joins
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    mask = mask.reduce(k)
    if ground is None:
        img = Image.new("RGBA", mask.size, (0, 0, 0, 0))
        img.putalpha(mask)
    else:
        img = Image.composite(Image.new("L", mask.size, 0), Image.new("L", mask.size, ground), mask)
    return encode(img)


def fit(strokes, extent, left, top):
    """Pen strokes (any unit, y downwards) scaled so that their longer side is extent canvas pixels, with the
    top left of their bounding box at (left, top)."""
    xs = [x for s in strokes for x, _ in s]
    ys = [y for s in strokes for _, y in s]
    scale = extent / max(max(xs) - min(xs), max(ys) - min(ys), 1)
    return [[(left + (x - min(xs)) * scale, top + (y - min(ys)) * scale) for x, y in s] for s in strokes]
