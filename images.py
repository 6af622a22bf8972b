"""People's digits as MNIST's 28×28 inputs: reading drawings, scans and photos, and drawing pen strokes.

This module knows images, ink and MNIST's framing; nothing of models, HTTP or the command line.

    prepare_image(path or file)   -> uint8 1×28×28: a picture of one digit, framed as MNIST's were
    draw_strokes(segments, ...)   -> uint8 N×1×28×28: pen strokes, as the page's canvas and prepare_image make them

MNIST's framing (LeCun et al.): the digit's bounding box scaled so that its longer side is 20 pixels, then
placed in 28×28 with its centre of mass at the centre.
"""

import os

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

BOX = 20             # MNIST's digits: the longer side of the ink's bounding box, in pixels
SIZE = 28            # ... placed in 28×28 by their centre of mass
CROP = 0.25          # the bounding box is of the pixels holding at least this share of the most ink: a
                     # photo's faint specks and shadows left outside do not stretch it
BLANK = 32           # an image whose most ink is below this (of 255) holds no digit
WORK_SIZE = 256      # an image is reduced to at most this many pixels a side before the ink is looked for:
                     # 256 leaves a stroke of a 28×28 digit's width 9 pixels or more


class ImageError(ValueError):
    """An image that cannot be read as a digit; the message says why in a few words."""


class TooLarge(ImageError):
    """More pixels than Pillow's limit against decompression bombs."""


class Blank(ImageError):
    """An image that was read but holds no ink."""


# ---------------------------------------------------------------- reading a picture


def open_image(source):
    """Opens a path or binary file as an upright PIL image of at most WORK_SIZE pixels a side; the first
    frame of an animation. A JPEG is decoded at 1/2 to 1/8 scale when that is enough (Pillow's draft),
    so a 12-megapixel photo costs about what a small one does."""
    max_pixels = 89_478_485  # Pillow's limit, applied to what is decoded (a JPEG at reduced scale)
    Image.MAX_IMAGE_PIXELS = None  # the check below replaces Pillow's: it gives the size, and not as a warning
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            raise ImageError("a folder, not an image")
        if os.path.isfile(source) and os.path.getsize(source) == 0:
            raise ImageError("empty file")
    try:
        with Image.open(source) as img:
            img.draft(img.mode, (WORK_SIZE, WORK_SIZE))
            if img.width * img.height > max_pixels:
                raise TooLarge(f"image too large: {img.width}×{img.height} pixels")
            img = ImageOps.exif_transpose(img)  # a portrait photo arrives upright
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit or float greys: to 8 bits
            img = img.convert("F")
            top = img.getextrema()[1]
            img = img.point(lambda v: v * 255 / (65535 if top > 255 else 255 if top > 1 else 1)).convert("L")
        elif img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            img = img.convert("RGBA")
        elif img.mode != "L":
            img = img.convert("RGB").convert("L")
        img.thumbnail((WORK_SIZE, WORK_SIZE))
        return img
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("cannot be read: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except MemoryError:
        raise TooLarge("image too large to decode") from None
    except Exception:  # noqa: BLE001 -- a damaged file fails inside Pillow's decoders in many ways
        raise ImageError("damaged or truncated image") from None


def grey(img):
    """A PIL image of mode L as a float tensor H×W, 0 to 255."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width).float()


def paper_level(x, size):
    """The paper's level under dark strokes: the largest value within size×size pixels, then the smallest
    of those (a morphological closing), which fills in strokes narrower than size and follows the light's
    slower changes. The border is repeated outwards, so that light falling off towards an edge is
    followed, not cut short."""
    k = size | 1
    y = F.pad(x[None, None], (k - 1,) * 4, mode="replicate")
    for sign in (1, -1):  # each pass one dimension at a time: k, not k², comparisons a pixel
        y = sign * F.max_pool2d(F.max_pool2d(sign * y, (k, 1), stride=1), (1, k), stride=1)
    return y[0, 0]


def find_ink(img):
    """How much ink each pixel holds, H×W, 0 for none. A transparent image's ink is its alpha channel,
    whatever the strokes' colour. Otherwise light ink on a dark ground is turned dark on light, and the
    ink is each pixel's shortfall from the paper's own level around it, as a fraction of that level, so
    that uneven light, shadows and paper tone cancel out."""
    if img.mode == "RGBA":
        alpha = img.getchannel("A")
        if alpha.getextrema()[0] < 255:
            return grey(alpha)
        img = img.convert("RGB").convert("L")
    x = grey(img)
    if min(x.shape) >= 64:  # a photo's noise, averaged over 3×3 pixels before the paper's level is read
        x = F.avg_pool2d(x[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    # light ink on a dark ground when the lightest pixels stand out further from their surroundings (the
    # median of the half of the image around them, on a 64-pixel copy) than the darkest do
    h, w = x.shape
    small = F.adaptive_avg_pool2d(x[None, None], (max(1, 64 * h // max(h, w)), max(1, 64 * w // max(h, w))))
    around = F.unfold(F.pad(small, (16,) * 4, mode="replicate"), 33).median(1).values.view_as(small)
    low, high = torch.quantile((small - around).flatten(), torch.tensor([0.01, 0.99]))
    if high > -low:
        x = 255 - x

    def ink(size):
        paper = paper_level(x, size)
        return 255 * (paper - x) / paper.clamp(min=64)

    # the paper's level is read over a window a few strokes wide: wider would fill in the paper between
    # strokes where the light changes fast, narrower would leave the middle of thick strokes out
    size = max(x.shape) // 4
    y = ink(size)

    def erode(m):
        return -F.max_pool2d(-m, 3, stride=1, padding=1)

    strokes = F.max_pool2d(erode((y > 0.5 * y.max()).float()[None, None]), 3, stride=1, padding=1)  # no specks
    width = 2 * strokes.sum() / (strokes - erode(strokes)).sum().clamp(min=1)  # area over half the edge
    fitted = int(min(size, max(5, 3 * width)))
    if fitted != size:
        y = ink(fitted)
    return (y - y.median()).clamp(min=0)


# ---------------------------------------------------------------- MNIST's framing


def place(boxes, sizes):
    """uint8 N×1×28×28 from N×BOX×BOX ink (0 or more, nothing outside each digit's height×width in sizes,
    N×2): each digit's ink scaled so that its most is 255, placed with its centre of mass at the centre of
    28×28, as far as its box allows."""
    n = len(boxes)
    x = boxes / boxes.amax((1, 2), keepdim=True).clamp(min=1e-12) * 255
    at = torch.arange(BOX, dtype=x.dtype, device=x.device)
    mass = x.sum((1, 2)).clamp(min=1e-12)
    centre = torch.stack((x.sum(2) @ at, x.sum(1) @ at), 1) / mass[:, None]  # N×2: row, column
    corner = (SIZE // 2 - centre).round().clamp(min=0)
    corner = torch.minimum(corner, SIZE - sizes.to(corner.dtype)).long()      # N×2: top, left
    rows = (corner[:, 0, None] + torch.arange(BOX, device=x.device))[:, :, None]  # N×BOX×1
    cols = (corner[:, 1, None] + torch.arange(BOX, device=x.device))[:, None, :]  # N×1×BOX
    out = torch.zeros(n, SIZE + BOX, SIZE + BOX, device=x.device)  # room for the empty part of a box
    out[torch.arange(n, device=x.device)[:, None, None], rows, cols] = x
    return out[:, None, :SIZE, :SIZE].round().to(torch.uint8)


def frame(ink):
    """uint8 1×28×28 from ink H×W: cropped to the ink, its longer side scaled to BOX pixels, placed."""
    rows, cols = (ink > CROP * ink.max()).nonzero(as_tuple=True)
    x = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = x.shape
    size = (max(1, round(BOX * h / max(h, w))), max(1, round(BOX * w / max(h, w))))
    box = torch.zeros(1, BOX, BOX)
    box[0, :size[0], :size[1]] = F.interpolate(x[None, None], size=size, mode="bilinear", antialias=True,
                                               align_corners=False)[0, 0]
    return place(box, torch.tensor([size]))[0]


def prepare_image(source):
    """Turns a photo, scan or drawing of one digit (a path or a binary file) into a uint8 1×28×28 tensor
    made the way MNIST was: the ink found (find_ink), then framed (frame)."""
    x = find_ink(open_image(source))
    if x.max() < BLANK:
        raise Blank("blank image: no ink found")
    return frame(x)
