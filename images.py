"""People's digits as MNIST's 28×28 inputs: reading drawings, scans and photos, and drawing pen strokes.

This module knows images, ink and MNIST's framing; nothing of models, HTTP or the command line.

    prepare_image(path or file)   -> uint8 1×28×28: a picture of one digit, framed as MNIST's were
    read_digits(path or file)     -> [(uint8 1×28×28, box)]: each digit of a number, left to right, framed
                                     as prepare_image frames one; box (x0, y0, x1, y1) in the picture's pixels
    draw_strokes(segments, ...)   -> uint8 N×1×28×28: pen strokes, as the page's canvas and prepare_image make them

MNIST's framing (LeCun et al.): the digit's bounding box scaled so that its longer side is 20 pixels, then
placed in 28×28 with its centre of mass at the centre.
"""

import os
import stat
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

BOX = 20             # MNIST's digits: the longer side of the ink's bounding box, in pixels
SIZE = 28            # ... placed in 28×28 by their centre of mass
CROP = 0.25          # the bounding box is of the pixels holding at least this share of the most ink: a
                     # photo's faint specks and shadows left outside do not stretch it
BLANK = 32           # an image whose most ink is below this (of 255) holds no digit
TRANSPARENT = 32     # alpha below this is the ground; an image at least half of which is such ground is a
                     # drawing on it: a canvas's strokes rarely cover a third of it, a screenshot's rounded
                     # corners or border a tenth (a 3-pixel border, 38% of a 28-pixel picture)
WORK_SIZE = 256      # an image is reduced to at most this many pixels a side before the ink is looked for:
                     # 256 leaves a stroke of a 28×28 digit's width 9 pixels or more. A row of digits, over
                     # twice as wide as tall, keeps its shorter side at 128 up to 4×256 on its longer
ROW_SIZE = 4 * WORK_SIZE


FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # plain rasters: no PostScript (Pillow would run
                                                        # Ghostscript), no icons, fonts or camera formats
# Pillow refuses images of over twice Image.MAX_IMAGE_PIXELS itself and warns of those over it; open_image
# refuses those over it, after a JPEG's reduced-scale decoding, in a sentence, so the warning says nothing more
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An image that cannot be read as a digit; the message says why in a few words."""


class NotAnImage(ImageError):
    """Not an image in one of FORMATS."""


class TooLarge(ImageError):
    """More pixels than Pillow's limit against decompression bombs."""


class Blank(ImageError):
    """An image that was read but holds no ink."""


# ---------------------------------------------------------------- reading a picture


def work_size(width, height):
    """The longer side an image of width×height is reduced to: WORK_SIZE, or, for a row of digits over twice
    as long as it is high, enough to keep its shorter side at WORK_SIZE / 2, up to ROW_SIZE."""
    return round(min(ROW_SIZE, max(WORK_SIZE, WORK_SIZE / 2 * max(width, height) / max(1, min(width, height)))))


def open_image(source):
    """Opens a path or binary file as (an upright PIL image of mode L or RGBA, at most work_size pixels a
    side, the picture's pixels per pixel of it); the first frame of an animation. A JPEG is decoded at 1/2
    to 1/8 scale when that is enough (Pillow's draft), so a 12-megapixel photo costs about what a small one
    does. Every other image is reduced as it is decoded, before any copy of it is made: a decode holds about
    one image's pixels."""
    if isinstance(source, (str, os.PathLike)):
        try:
            info = os.stat(source)
        except FileNotFoundError:
            raise ImageError("no such file") from None
        except OSError as e:
            raise ImageError(f"cannot be read: {e.strerror.lower()}") from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("a folder, not an image")
        if not stat.S_ISREG(info.st_mode):  # a pipe would keep us waiting, a device reading for ever
            raise ImageError("not a regular file (a pipe, socket or device)")
        if info.st_size == 0:
            raise ImageError("empty file")
    try:
        with Image.open(source, formats=FORMATS) as img:
            full, side = max(img.size), work_size(*img.size)
            img.draft(img.mode, (side, side))
            if img.width * img.height > Image.MAX_IMAGE_PIXELS:
                raise TooLarge(f"image too large: {img.width}×{img.height} pixels, over {Image.MAX_IMAGE_PIXELS:,}")
            if img.mode in ("1", "P"):  # a palette's colours are resized, not its indices
                img = img.convert("RGBA" if "transparency" in img.info else "L")
            img.thumbnail((side, side), reducing_gap=None if img.mode.startswith("I;16") else 2.0)  # (its
            # reduce() takes no 16-bit images)
            img = ImageOps.exif_transpose(img)  # a portrait photo arrives upright
        scale = full / max(img.size)
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit or float greys: to 8 bits
            img = img.convert("F")
            top = img.getextrema()[1]
            return img.point(lambda v: v * 255 / (65535 if top > 255 else 255 if top > 1 else 1)).convert("L"), scale
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            return img.convert("RGBA"), scale
        return img if img.mode == "L" else img.convert("RGB").convert("L"), scale
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("cannot be read: permission denied") from None
    except UnidentifiedImageError:
        raise NotAnImage("not a PNG, JPEG, GIF, BMP, TIFF or WebP image") from None
    except (MemoryError, Image.DecompressionBombError):
        raise TooLarge(f"image too large: over {Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except Exception:  # noqa: BLE001 -- a damaged file fails inside Pillow's decoders in many ways
        raise ImageError("damaged or truncated image") from None


def grey(img):
    """A PIL image of mode L as a float tensor H×W, 0 to 255."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width).float()


def paper_level(x, size):
    """The paper's level under dark strokes: the largest value within size×size pixels, then the smallest
    of those (a morphological closing), which fills in strokes narrower than size and follows the light's
    slower changes. Read on a copy a quarter as wide (each pixel the largest of its 4×4, which is where
    the closing starts), then enlarged: the level changes slowly, and a sixteenth of the pixels cost a
    sixteenth of the time. The border is repeated outwards, so that light falling off towards an edge is
    followed, not cut short."""
    step = 4 if size >= 16 else 1
    k = (size // step) | 1
    h, w = x.shape
    y = F.pad(x[None], (0, -w % step, 0, -h % step), mode="replicate")[0]
    y = y.view(y.shape[0] // step, step, -1, step).amax((1, 3))[None, None]  # (max_pool2d is ten times slower)
    y = F.pad(y, (k - 1,) * 4, mode="replicate")
    for sign in (1, -1):  # each pass one dimension at a time: k, not k², comparisons a pixel
        y = sign * F.max_pool2d(F.max_pool2d(sign * y, (k, 1), stride=1), (1, k), stride=1)
    return F.interpolate(y, scale_factor=step, mode="bilinear")[0, 0, :x.shape[0], :x.shape[1]]


def spread(m, pick):
    """Each pixel of m (H×W) replaced by the largest (pick=torch.maximum) or smallest (torch.minimum) of its
    3×3 neighbourhood, the border repeated: a dilation or erosion, in elementwise steps (max_pool2d's
    costs ten times as much on the CPU)."""
    p = F.pad(m[None], (1, 1, 1, 1), mode="replicate")[0]
    rows = pick(pick(p[:-2], p[1:-1]), p[2:])
    return pick(pick(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def find_ink(img):
    """How much ink each pixel holds, H×W, 0 for none. A drawing on a transparent ground (a canvas) has its
    ink in the alpha channel, whatever the strokes' colour. Otherwise light ink on a dark ground is turned
    dark on light, and the ink is each pixel's shortfall from the paper's own level around it, as a
    fraction of that level, so that uneven light, shadows and paper tone cancel out."""
    if img.mode == "RGBA":
        alpha = grey(img.getchannel("A"))
        if (alpha < TRANSPARENT).float().mean() >= 0.5:
            return alpha
        # an opaque picture with transparent corners or a border (a screenshot): those filled with its ground
        x, seen = grey(img.convert("L")), alpha / 255
        return find_ink_on_paper(x * seen + x[seen == 1].median() * (1 - seen) if (seen == 1).any() else x)
    return find_ink_on_paper(grey(img))


def find_ink_on_paper(x):
    """find_ink for a grey picture H×W, 0 to 255."""
    if min(x.shape) >= 64:  # a photo's noise, averaged over 3×3 pixels before the paper's level is read
        x = F.avg_pool2d(x[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    # light ink on a dark ground when the lightest pixels stand out further from their surroundings (the
    # median of the half of the image around them, on a 32-pixel copy) than the darkest do
    h, w = x.shape
    across = max(h, w) * WORK_SIZE / work_size(w, h)  # a row of digits: as across one square of it
    small = F.adaptive_avg_pool2d(x[None, None], (max(1, int(32 * h / across)), max(1, int(32 * w / across))))
    around = F.unfold(F.pad(small, (8,) * 4, mode="replicate"), 17).median(1).values.view_as(small)
    low, high = torch.quantile((small - around).flatten(), torch.tensor([0.01, 0.99]))
    if high > -low:
        x = 255 - x

    def ink(size):
        paper = paper_level(x, size)
        return 255 * (paper - x) / paper.clamp(min=64)

    # the paper's level is read over a window a few strokes wide: wider would fill in the paper between
    # strokes where the light changes fast, narrower would leave the middle of thick strokes out
    size = int(across) // 4
    y = ink(size)

    strokes = spread(spread((y > 0.5 * y.max()).float(), torch.minimum), torch.maximum)  # no specks
    width = 2 * strokes.sum() / (strokes - spread(strokes, torch.minimum)).sum().clamp(min=1)  # area over half
    # the edge
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
    x = find_ink(open_image(source)[0])
    if x.max() < BLANK:
        raise Blank("blank image: no ink found")
    return frame(x)


# ---------------------------------------------------------------- the digits of a number


MAX_DIGITS = 12      # a picture with more digits than this is refused: a number, not a page of text
SPECK = 0.02         # a mark (connected ink) with less ink than this share of the largest is a speck
TALL = 0.5           # a mark at least this share of the tallest mark's height is a digit or its main part
SAME_DIGIT = 0.5     # two such marks are one digit when the narrower has this share of its width under the other,
ONE_WIDTH = 0.9      # or any of it and together they are at most this many times the tallest mark wide (90% of
                     # the pen digits are): a digit broken in two pieces side by side, not two slanted digits
REACH = 0.2          # a smaller mark (a 5's or 7's bar, a dot of a broken stroke) joins the digit it is under,
                     # or the nearest within this share of the tallest mark's height; farther, it is a speck
TOUCHING = 2.0       # in a number, a digit wider than this many times the tallest mark is digits that touch
                     # (no pen digit is as wide as that: the widest, a flat 0, is 1.96 times its height; at 1.4
                     # one writer's 0s and 2s were cut): it is cut where the least ink is, about every WIDTH
WIDTH = 0.6          # times that height (the pen digits' median width, 0.64 of their height). A picture of one
                     # mark is one digit, however wide: as a one-digit picture was read


class TooManyDigits(ImageError):
    """More than MAX_DIGITS digits, or more marks than a number has."""


def find_digits(ink):
    """The digits of a row of handwriting in ink H×W, left to right: a list of (mask H×W, box (x0, y0, x1,
    y1) in its pixels, x1 and y1 past the last), each mask the pixels of one digit's marks and about them.

    The marks are the 8-connected pixels of at least CROP of the most ink (what frame crops to). Specks
    (SPECK) are dropped. The tall marks (TALL) are the digits, a pair of them one digit when they stand over
    each other (SAME_DIGIT, ONE_WIDTH: a 4 written in two strokes, a broken stroke); each smaller mark joins
    the digit it is under or the nearest within REACH, and is dropped farther away. In a number, a digit
    too wide for one (TOUCHING) is cut. docs/numbers.md gives the rules' reasons and measurements."""
    mask = (ink > CROP * ink.max()).numpy()
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    mass = np.bincount(labels.ravel(), weights=ink.numpy().ravel(), minlength=n + 1)[1:]
    keep = np.flatnonzero(mass >= SPECK * mass.max())
    if len(keep) > 8 * MAX_DIGITS:
        raise TooManyDigits(f"{len(keep)} separate marks: not a number of at most {MAX_DIGITS} digits")
    slices = ndimage.find_objects(labels)
    box = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in (slices[i] for i in keep)])
    height, width = box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]
    tall = height >= TALL * height.max()

    digits = []  # [x0, x1, marks]: the tall marks, left to right, merged where they stand over each other
    for i in sorted(np.flatnonzero(tall), key=lambda i: box[i, 0]):
        if digits:
            x0, x1, marks = digits[-1]
            under = min(x1, box[i, 2]) - max(x0, box[i, 0])
            if under >= SAME_DIGIT * min(x1 - x0, width[i]) or (
                    under > 0 and max(x1, box[i, 2]) - x0 <= ONE_WIDTH * height.max()):
                digits[-1] = [x0, max(x1, box[i, 2]), marks + [i]]
                continue
        digits.append([box[i, 0], box[i, 2], [i]])
    reach = REACH * height.max()
    for i in np.flatnonzero(~tall):
        gaps = [max(x0, box[i, 0]) - min(x1, box[i, 2]) for x0, x1, _ in digits]  # < 0: under it
        nearest = int(np.argmin(gaps))
        if gaps[nearest] <= reach:
            digits[nearest][2].append(i)
    found = []
    for _, _, marks in digits:
        own = np.isin(labels, keep[marks] + 1)
        b = box[marks]
        b = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
        found += split_touching(own, ink, b, height.max()) if len(digits) > 1 else [(own, b)]
    if len(found) > MAX_DIGITS:
        raise TooManyDigits(f"{len(found)} digits: at most {MAX_DIGITS} are read")
    return found


def split_touching(own, ink, box, tall):
    """One digit's marks (own, H×W bool, within box) as [(mask, box)]; cut in several where it is too wide
    for one (TOUCHING × tall, the tallest mark's height), at the column of least ink near each WIDTH × tall."""
    x0, y0, x1, y1 = box
    if x1 - x0 <= TOUCHING * tall:
        return [(own, box)]
    column = (ink[y0:y1, x0:x1] * torch.from_numpy(own[y0:y1, x0:x1])).sum(0)
    n = max(2, round((x1 - x0) / (WIDTH * tall)))
    cuts = [x0]
    for k in range(1, n):
        lo, hi = round((x1 - x0) * (k - 0.5) / n), round((x1 - x0) * (k + 0.5) / n)
        cuts.append(x0 + lo + int(column[lo:hi].argmin()))
    out = []
    for a, b in zip(cuts, cuts[1:] + [x1]):
        part = np.zeros_like(own)
        part[:, a:b] = own[:, a:b]
        rows = np.flatnonzero(part.any(1))
        if len(rows):
            out.append((part, (a, int(rows[0]), b, int(rows[-1]) + 1)))
    return out


def read_digits(source):
    """The digits of a number in a picture (a path or a binary file), left to right: a list of (uint8
    1×28×28, box (x0, y0, x1, y1) in the picture's pixels). A picture of one digit gives what prepare_image
    gives; each digit of several is framed alone: its marks, and the faint edges of their strokes."""
    img, scale = open_image(source)
    x = find_ink(img)
    if x.max() < BLANK:
        raise Blank("blank image: no ink found")
    found = find_digits(x)

    def in_picture(box):
        return [round(float(v) * scale) for v in box]

    if len(found) == 1:
        return [(frame(x), in_picture(found[0][1]))]
    out = []
    for own, (x0, y0, x1, y1) in found:  # each digit's marks, and the faint edges under CROP two pixels about them
        about = np.s_[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2]
        near = ndimage.binary_dilation(own[about], np.ones((5, 5), dtype=bool))
        out.append((frame(x[about] * torch.from_numpy(near)), in_picture((x0, y0, x1, y1))))
    return out


# ---------------------------------------------------------------- drawing pen strokes


def tent_cdf(t):
    """The share of a triangle filter one pixel wide each side (antialiased resizing's filter) left of t."""
    t = t.clamp(-1, 1)
    return torch.where(t < 0, (t + 1) ** 2 / 2, 1 - (1 - t) ** 2 / 2)


def draw_strokes(segments, counts, width, chunk=64):
    """Pen digits as prepare_image frames a drawing of them on a canvas, without drawing the canvas: uint8
    N×1×28×28.

    segments: N×S×4, each digit's strokes as line segments (x0, y0, x1, y1), y down, in any unit; its
    first counts[i] are its own, the rest repeat one of them. width: N, the pen's width as a share of the
    digit's extent (the longer side of its strokes' bounding box). A round pen of that width covers the
    strokes; frame() would crop to the ink, scale its longer side to BOX pixels with a triangle filter
    (what a canvas drawn at any size comes to), so each pixel here is the filtered ink a straight stroke
    leaves at that distance from its middle, then place() puts the digit in 28×28. The digits are drawn
    in chunks of about the same number of segments, each pixel against each segment of its digit.
    """
    out = torch.empty(len(segments), 1, SIZE, SIZE, dtype=torch.uint8, device=segments.device)
    grid = torch.arange(BOX, dtype=segments.dtype, device=segments.device) + 0.5      # pixel centres
    py, px = (g.flatten() for g in torch.meshgrid(grid, grid, indexing="ij"))
    order = counts.argsort()
    for idx in order.split(chunk):
        s = segments[idx, :int(counts[idx].max())]
        ends = s.view(len(idx), -1, 2)                                                # n×2S×2: x, y
        lo, hi = ends.amin(1), ends.amax(1)
        pen = width[idx] * (hi - lo).amax(1).clamp(min=1e-6)
        side = hi - lo + pen[:, None]                                                  # the ink's box: x, y
        size = (BOX * side / side.amax(1, keepdim=True)).round().clamp(min=1)        # ... in pixels
        p = (ends - lo[:, None] + pen[:, None, None] / 2) * (size / side)[:, None]   # ends in pixels
        p = p.view(len(idx), -1, 1, 4)                                                 # n×S×1×4
        ax, ay, ex, ey = p[..., 0], p[..., 1], p[..., 2] - p[..., 0], p[..., 3] - p[..., 1]
        wx, wy = px - ax, py - ay                                  # n×S×BOX², from each segment's start
        t = (wx * ex).addcmul_(wy, ey).mul_(1 / (ex * ex + ey * ey).clamp(min=1e-12)).clamp_(0, 1)
        wx.addcmul_(t, ex, value=-1)                               # ... to the segment's nearest point
        wy.addcmul_(t, ey, value=-1)
        d = wx.mul_(wx).addcmul_(wy, wy).amin(1).sqrt().view(-1, BOX, BOX)
        r = (pen * BOX / side.amax(1) / 2)[:, None, None]
        ink = tent_cdf(r - d) - tent_cdf(-r - d)
        h, w = size[:, 1, None, None], size[:, 0, None, None]
        ink = ink * ((grid[:, None] < h) & (grid[None, :] < w))
        out[idx] = place(ink, size.flip(1))
    return out
