"""Rebuilds pendigits.bin, the pen digits mnist.py trains on, from UCI's pendigits-orig.tra, bit for bit.

    python tools/build_pendigits.py ../shared/pendigits/pendigits-orig.tra   # writes pendigits.bin

The source: UCI Machine Learning Repository, dataset 81, "Pen-Based Recognition of Handwritten Digits"
(E. Alpaydin, F. Alimoglu, 1998; CC BY 4.0), the 30 training writers' 7,494 digits as pen trajectories
in UNIPEN format (pendigits-orig.tra.Z, decompressed). What changed: each stroke is simplified to the
points that keep it within 2 tablet units of the original (Ramer-Douglas-Peucker; 2 units are a fifth of
a pixel of a 20-pixel digit), and the file is laid out as arrays:

    b"pendigits-strokes 1 DIGITS STROKES POINTS\\n"
    labels u8[DIGITS], writers u8[DIGITS] (1-30), strokes of each digit u8[DIGITS],
    points of each stroke u16[STROKES], points u16[POINTS][2] (x, y in tablet units, y upwards)

all little-endian, nothing else: 0.5 MB against the source's 3.6 MB, and no compressor whose output could
change between versions.
"""

import argparse
import hashlib
import sys
from array import array
from pathlib import Path

SOURCE_SHA256 = "a66225d68d7d68591e62944df1ad33b3f5aa608e2df2505844b41f5568a80da4"
TOLERANCE = 2  # tablet units a simplified stroke may stray from the original
OUT = Path(__file__).resolve().parent.parent / "pendigits.bin"


def parse(text):
    """[(label, writer, [stroke, ...])], each stroke a list of (x, y), from a UNIPEN file of digits."""
    digits, stroke = [], None
    for line in text.splitlines():
        if line.startswith(".SEGMENT"):
            digits.append([int(line.split('"')[1]), None, []])
        elif line.startswith(".COMMENT"):  # .COMMENT <label> <writer> <number>
            digits[-1][1] = int(line.split()[2])
        elif line.startswith(".PEN_DOWN"):
            stroke = []
            digits[-1][2].append(stroke)
        elif line.startswith(".PEN_UP"):
            stroke = None
        elif stroke is not None and line.strip():
            x, y = map(int, line.split())
            stroke.append((x, y))
    return digits


def simplify(points, tolerance):
    """Ramer-Douglas-Peucker: the fewest of points, first and last kept, that stay within tolerance of all."""
    if len(points) < 3:
        return points
    (ax, ay), (bx, by) = points[0], points[-1]
    length = ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
    far, at = -1.0, 0
    for i, (x, y) in enumerate(points[1:-1], 1):
        d = (abs((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / length if length else
             ((x - ax) ** 2 + (y - ay) ** 2) ** 0.5)
        if d > far:
            far, at = d, i
    if far <= tolerance:
        return [points[0], points[-1]]
    return simplify(points[:at + 1], tolerance)[:-1] + simplify(points[at:], tolerance)


def build(text):
    digits = parse(text)
    strokes = [simplify(s, TOLERANCE) for _, _, ss in digits for s in ss]
    arrays = [array("B", [label for label, _, _ in digits]), array("B", [writer for _, writer, _ in digits]),
              array("B", [len(ss) for _, _, ss in digits]), array("H", map(len, strokes)),
              array("H", [v for s in strokes for p in s for v in p])]
    if sys.byteorder == "big":
        for a in arrays:
            a.byteswap()
    head = f"pendigits-strokes 1 {len(digits)} {len(strokes)} {sum(map(len, strokes))}\n".encode()
    return head + b"".join(a.tobytes() for a in arrays)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="pendigits-orig.tra, decompressed")
    p.add_argument("--out", default=OUT, help="(default: pendigits.bin beside mnist.py)")
    args = p.parse_args()
    data = Path(args.source).read_bytes()
    if hashlib.sha256(data).hexdigest() != SOURCE_SHA256:
        sys.exit(f"build_pendigits.py: error: {args.source} is not UCI's pendigits-orig.tra (its SHA-256 differs)")
    out = build(data.decode("ascii"))
    Path(args.out).write_bytes(out)
    print(f"wrote {args.out}: {len(out):,} bytes, SHA-256 {hashlib.sha256(out).hexdigest()}")


if __name__ == "__main__":
    main()
