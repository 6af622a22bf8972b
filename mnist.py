"""Train a BatchNorm CNN of 23,978 parameters for one epoch on MNIST and people's pen digits; evaluate, save.

MNIST test accuracy after one epoch: 99.44% ± 0.04 over seeds 0-19; the pen digits of writers it never saw,
drawn on the serve page: 98.3% on validation, over three folds of ten writers (the README names the machines,
times and commands). Digits are deskewed; the convolution filters learn with Muon, the rest with SGD; each
test digit is looked at five times. Every choice was made on validation (--val): docs/experiments.md,
docs/handwriting.md. Using the model: evaluate.py, predict.py, serve.py, images.py.

    python mnist.py                  # train one epoch, evaluate, save mnist_cnn.pt
    python mnist.py --runs 5         # five seeds: mean, spread, minimum
    python mnist.py --val            # hold out MNIST's last 10,000 training images and each fold of pen writers
    python mnist.py evaluate         # also: predict IMAGE..., serve
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import datafiles
import images as pictures

# ---------------------------------------------------------------- configuration

POSITIVE = ("positive", lambda v: v > 0)
FRACTION = ("from 0 to below 1", lambda v: 0 <= v < 1)


def option(default, help, check=None, choices=None):
    """A field of Config: its default, and the help text and checks of its command-line flag."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices})


@dataclass
class Config:
    model: str = option("cnn24k", "cnn24k, this project's net, or cnn11k, the earlier public solution's")
    epochs: int = option(1, "passes over the training digits", POSITIVE)
    batch_size: int = option(128, "digits a step; with Muon 128 is as good as 64 on validation, and faster on a CPU",
                             POSITIVE)
    muon_lr: float = option(0.125, "peak learning rate of the convolution filters (Muon: orthogonalised updates)",
                            POSITIVE)
    lr: float = option(0.55, "peak learning rate of the rest (BatchNorm, the last layer): SGD with Nesterov momentum",
                       POSITIVE)
    momentum: float = option(0.9, "Nesterov momentum of both; no weight decay (5e-4 cost 0.03 points on validation)",
                             FRACTION)
    warmup: float = option(0.25, "share of the steps spent rising to the peak learning rates", FRACTION)
    label_smoothing: float = option(0.1, "share of each target spread over the others; worth 0.1 point on validation",
                                    FRACTION)
    seed: int = option(0, "seeds the weights, the batch order and the pen digits' widths")
    device: str = option("auto", "auto takes CUDA when there is one", choices=("auto", "cpu", "cuda"))
    val: bool = option(False, "hold out MNIST's last 10,000 training images and a fold of ten pen writers, and report "
                       "on them; each run trains each fold in turn unless --fold says which")
    fold: int = option(0, "with --val, the pen writers held out: 1 (writers 1-10), 2 (11-20), 3 (21-30), or 0 for each "
                       "in turn", ("0 to 3", lambda v: 0 <= v <= 3))
    mnist_only: bool = option(False, "train on MNIST alone, without the pen digits (to compare with other programs)")
    pen_draws: int = option(1, "drawings of each pen digit an epoch, each with a pen of its own: 2 read held-out "
                            "writers 0.36 points better and cost MNIST validation 0.02 (3 folds x 3 seeds)", POSITIVE)


MEAN, STD = 0.1307, 0.3081        # of the training images, scaled to [0, 1]
VAL_SIZE = 10_000
PEN_FOLDS = (range(1, 11), range(11, 21), range(21, 31))  # --val holds out one of these folds of ten writers, as
                                                          # it holds out MNIST's last 10,000: figures of one group
                                                          # of ten are figures about those ten people
PEN_WIDTHS = (0.03, 0.6)          # the pen's width as a share of the digit's extent, drawn log-uniformly for training
PEN_VAL_WIDTHS = (0.05, 0.1, 0.16, 0.25)  # --val draws each held-out digit with each: a fine pen, the page's (20
                                          # pixels on a 200-pixel digit), a bold one, a small digit


class UserError(Exception):
    """A mistake the user can fix; the command line prints it as one sentence."""


# ---------------------------------------------------------------- model


def conv_bn(cin, cout, kernel=3, stride=1, padding=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def conv_pool_bn(cin, cout):
    # pooling before BatchNorm and ReLU: the same kind of layer, a quarter of their work
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(cout), nn.ReLU())


MODELS = {
    "cnn24k": lambda: nn.Sequential(
        conv_bn(1, 16, kernel=4, stride=2, padding=0),  # 28 -> 13: 13 windows 4 wide, 2 apart, cover 28 exactly
        conv_pool_bn(16, 24),                           # 13 -> 6: the pooling drops the last row and column
        conv_bn(24, 32),                                # 6
        conv_bn(32, 44, padding=0),                     # 6 -> 4: wide where positions are few
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(44, 10),
    ),
    "cnn11k": lambda: nn.Sequential(  # the earlier public solution's net, exactly
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d((4, 4)),
        nn.Flatten(),
        nn.Linear(512, 10),
    ),
}
OLD_NAMES = {"default": "cnn24k", "seed": "cnn11k"}  # the names of earlier versions, in weights files and flags


def build_model(name):
    return MODELS[name]().to(memory_format=torch.channels_last)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- data


def load_mnist(root, splits=("train", "test")):
    """Returns {"train": (images, labels), "test": (...)}: uint8 images N×1×28×28, int64 labels."""
    raw = Path(root) / "MNIST" / "raw"
    for name in datafiles.MNIST_FILES:
        datafiles.check_file(raw / name)

    def read(name, header):  # an IDX file is a header, then the bytes; check_file vouched for both
        return torch.frombuffer(bytearray((raw / name).read_bytes()), dtype=torch.uint8, offset=header)

    return {split: (read(f"{prefix}-images-idx3-ubyte", 16).view(-1, 1, 28, 28),
                    read(f"{prefix}-labels-idx1-ubyte", 8).long())
            for split, prefix in (("train", "train"), ("test", "t10k")) if split in splits}


def draw_pen_digits(pen, widths):
    """uint8 N×1×28×28: the pen digits drawn with these pen widths, as prepare_image frames a drawing."""
    return pictures.draw_strokes(pen["segments"], pen["counts"], widths)


def random_widths(n, generator):
    low, high = PEN_WIDTHS
    return low * (high / low) ** torch.rand(n, generator=generator)


def deskew(x):
    """Straightens slanted digits: shears each image's rows sideways until the ink's column no longer
    depends on its row (zero covariance), pivoting on the centre of mass. x: N×1×28×28, background 0."""
    rows = x.sum(3)[:, 0]                                         # N×28: ink in each row
    at = torch.arange(28.0, device=x.device)
    mass = rows.sum(1).clamp(min=1e-6)
    cy = rows @ at / mass
    dy = at - cy[:, None]                                         # each row's height above the centre
    cov = (dy * (x[:, 0] @ at)).sum(1) / mass                     # E[(row - cy) * column]
    slant = cov / ((dy**2 * rows).sum(1) / mass).clamp(min=1e-6)  # columns moved per row
    u = (at - 13.5) / 14                                          # pixel centres in grid_sample's [-1, 1]
    gx = u + (slant[:, None] * dy / 14)[:, :, None]               # N×28×28: read from (column + slant * dy)
    grid = torch.stack((gx, u[:, None].expand_as(gx)), dim=-1)
    return F.grid_sample(x, grid, align_corners=False)


def deskew_and_standardise(images):
    """The model's input from uint8 images N×1×28×28: deskewed, then standardised.

    Images stay uint8 until a batch is taken: a quarter of the memory of floats.
    """
    x = deskew(images.float() / 255)
    return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- train


def one_cycle(step, total, warmup):
    """Learning-rate factor: a linear rise to the peak over the warm-up, then a linear fall towards zero."""
    rise = max(1, round(warmup * total))
    return min((step + 1) / rise, (total - step) / (total - rise + 1))


def orthogonalise(g, steps=3):
    """Roughly the nearest semi-orthogonal matrix to g: Muon's quintic Newton-Schulz iteration
    (Keller Jordan et al., 2024) pushes every singular value of g towards 1. Three steps did as well
    as Muon's usual five on validation."""
    if len(g) > g.shape[1]:
        return orthogonalise(g.T, steps).T
    x = g / (g.norm() + 1e-7)
    for _ in range(steps):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x


@torch.no_grad()
def muon_step(filters, momenta, lr, momentum):
    """Muon: each filter bank, as an out×(in·k·k) matrix, moves by its orthogonalised Nesterov momentum.
    lr is a 0-d tensor."""
    for w, m in zip(filters, momenta):
        m.mul_(momentum).add_(w.grad)
        update = orthogonalise(w.grad.add(m, alpha=momentum).flatten(1))
        w.sub_(lr * max(1, update.shape[0] / update.shape[1]) ** 0.5 * update.view_as(w))


@torch.no_grad()
def sgd_step(params, momenta, lr, momentum):
    """SGD with Nesterov momentum, the same arithmetic as torch.optim.SGD(nesterov=True). Written out
    because constructing any torch.optim optimiser imports torch._dynamo: a second of every process."""
    for p, m in zip(params, momenta):
        m.mul_(momentum).add_(p.grad)
        p.addcmul_(p.grad.add(m, alpha=momentum), lr, value=-1)


def cuda_graph(step, idx):
    """Runs step(idx), then records it as a CUDA graph; returns replay(idx), which runs the recorded step
    on new indices. One replay launches the step's ~300 small kernels at once: launched one by one from
    Python they took 4 ms a step on an H100, and running them 0.7 ms."""
    static_idx = idx.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the first run sets up buffers; CUDA graphs want it off the main stream
        step(static_idx)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # recorded, not run
        step(static_idx)

    def replay(idx):
        static_idx.copy_(idx)
        graph.replay()
    return replay


def train(model, images, labels, cfg, pen=None, progress=False):
    """Trains in place with a one-cycle schedule; returns the mean training loss of the last epoch.

    The convolution filters learn with Muon, everything else (BatchNorm, the last layer) with SGD.
    On a GPU every full batch replays one recorded step (cuda_graph). pen: pen digits (datafiles.load_pendigits),
    drawn anew each epoch with random pen widths and shuffled in among the images.
    """
    device = images.device
    order = torch.Generator().manual_seed(cfg.seed)
    if pen is not None:  # one buffer for both, which each epoch's drawing fills in (a recorded step reads it)
        pen = {k: torch.cat([v] * cfg.pen_draws) for k, v in pen.items()}
        images = torch.cat([images, images.new_zeros(len(pen["labels"]), 1, 28, 28)])
        labels = torch.cat([labels, pen["labels"]])
    filters = [p for p in model.parameters() if p.ndim == 4]
    rest = [p for p in model.parameters() if p.ndim != 4]
    momenta, sgd_momenta = [torch.zeros_like(w) for w in filters], [torch.zeros_like(p) for p in rest]
    lr, muon_lr = torch.zeros((), device=device), torch.zeros((), device=device)  # tensors: a recorded step reads them
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)

    def step(idx):
        x, y = deskew_and_standardise(images[idx]), labels[idx]
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        model.zero_grad(set_to_none=True)
        loss.backward()
        sgd_step(rest, sgd_momenta, lr, cfg.momentum)
        muon_step(filters, momenta, muon_lr, cfg.momentum)
        total_loss.add_(loss.detach() * len(idx))
        correct.add_((out.argmax(1) == y).sum())

    batches = math.ceil(len(images) / cfg.batch_size)
    replay = None
    model.train()
    for epoch in range(cfg.epochs):
        if pen is not None:
            n = len(pen["labels"])
            images[-n:] = draw_pen_digits(pen, random_widths(n, order).to(device))
        perm = torch.randperm(len(images), generator=order).to(device)
        total_loss.zero_()
        correct.zero_()
        bar = tqdm(perm.split(cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   unit="batch", leave=False)
        for i, idx in enumerate(bar):
            f = one_cycle(epoch * batches + i, cfg.epochs * batches, cfg.warmup)
            lr.fill_(cfg.lr * f)
            muon_lr.fill_(cfg.muon_lr * f)
            if device.type != "cuda" or len(idx) < cfg.batch_size:
                step(idx)
            elif replay is None:
                replay = cuda_graph(step, idx)
            else:
                replay(idx)
            if progress and i % 25 == 24:
                seen = min((i + 1) * cfg.batch_size, len(images))
                bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.2f}%")
    return total_loss.item() / len(images)


# ---------------------------------------------------------------- evaluate


VIEWS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # the digit, and the digit moved one pixel down, up, right, left


@torch.no_grad()
def logits_over_views(model, images, batch_size=256):
    """The model's outputs for uint8 images N×1×28×28, in evaluation mode, averaged over VIEWS.

    Test-time augmentation: five looks at each digit, about +0.04 points on validation for five times
    the work. The border of a digit is background, so moving it with torch.roll loses no ink. Batches of
    256: on the 2-core Xeon 12% faster than 128 (the fastest on the EPYC before it), to the same last bit.
    """
    model.eval()
    out = []
    for x in images.split(batch_size):
        x = deskew_and_standardise(x)
        out.append(sum(model(x.roll(shift, dims=(2, 3))) for shift in VIEWS) / len(VIEWS))
    return torch.cat(out)


def evaluate(model, images, labels):
    """Returns (mean cross-entropy, accuracy in percent)."""
    out = logits_over_views(model, images)
    return F.cross_entropy(out, labels).item(), 100 * (out.argmax(1) == labels).sum().item() / len(labels)


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def evaluate_pen(model, pen):
    """Accuracy in percent on pen digits drawn with each width of PEN_VAL_WIDTHS: in all, per digit, per width."""
    n, widths = len(pen["labels"]), PEN_VAL_WIDTHS
    images = torch.cat([draw_pen_digits(pen, pen["segments"].new_full((n,), w)) for w in widths])
    labels = pen["labels"].repeat(len(widths))
    right = (logits_over_views(model, images).argmax(1) == labels).float()
    return {"pen_val_accuracy": 100 * right.mean().item(),
            "pen_val_per_digit": [100 * right[labels == d].mean().item() for d in range(10)],
            "pen_val_per_width": {w: 100 * r.mean().item() for w, r in zip(widths, right.split(n))}}


def train_and_evaluate(cfg, data, progress=False):
    """One seeded training run on MNIST's training images and, unless cfg.mnist_only, the pen digits
    (data["pen"]); then its evaluation on the test set. With cfg.val, it holds out MNIST's last 10,000
    training images and the pen digits of the writers of PEN_FOLDS[cfg.fold - 1] instead, and reports on both.
    Returns (model, metrics)."""
    device = pick_device(cfg.device)
    images, labels = (t.to(device) for t in data["train"])
    pen = {k: v.to(device) for k, v in data["pen"].items()} if "pen" in data else None
    if cfg.val:
        split = "val"
        images, labels, eval_images, eval_labels = (images[:-VAL_SIZE], labels[:-VAL_SIZE],
                                                    images[-VAL_SIZE:], labels[-VAL_SIZE:])
        held = torch.isin(pen["writers"], torch.tensor(PEN_FOLDS[cfg.fold - 1], device=device)) if pen else None
        pen, val_pen = ({k: v[keep] for k, v in pen.items()} for keep in (~held, held)) if pen else (None, None)
    else:
        split = "test"
        eval_images, eval_labels = (t.to(device) for t in data["test"])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)

    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    t0 = time.perf_counter()
    train_loss = train(model, images, labels, cfg, pen=None if cfg.mnist_only else pen, progress=progress)
    sync()
    t1 = time.perf_counter()
    loss, accuracy = evaluate(model, eval_images, eval_labels)
    t2 = time.perf_counter()
    metrics = {"model": cfg.model, "params": count_params(model), "epochs": cfg.epochs, "seed": cfg.seed, "fold": cfg.fold,
               "device": device.type, "batch_size": cfg.batch_size, "mnist_only": cfg.mnist_only,
               "train_loss": train_loss, f"{split}_accuracy": accuracy, f"{split}_loss": loss,
               "train_seconds": t1 - t0, "eval_seconds": t2 - t1}
    if cfg.val and val_pen:
        metrics.update(evaluate_pen(model, val_pen))
    return model, metrics


# ---------------------------------------------------------------- files


def atomic_write(path, write):
    """Calls write(tmp) on a temporary file beside path, then renames it: never a half-written path."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=Path(path).parent)
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    try:
        write(tmp)
        umask = os.umask(0)  # mkstemp made it private (0600): give it the permissions a new file gets
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)  # on Windows this fails while another program holds path open
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_weights(model, name, path):
    atomic_write(path, lambda tmp: torch.save({"model": name, "state_dict": model.state_dict()}, tmp))


def load_weights(path, device="cpu"):
    """Rebuilds the model a file of save_weights was made from; anything else is refused in one sentence."""
    path = Path(path)
    if not path.is_file():  # (a pipe would keep torch.load waiting)
        raise UserError(f"{path} is a folder, not a weights file" if path.is_dir() else f"{path} is not a regular file"
                        if path.exists() else f"no weights in {path}: train first with python mnist.py")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied") from None
    except Exception:  # noqa: BLE001 -- torch.load fails on a foreign file in many ways
        saved = None
    name, state = (saved.get("model"), saved.get("state_dict")) if isinstance(saved, dict) else (None, None)
    if not (isinstance(name, str) and isinstance(state, dict) and
            all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UserError(f"{path} is not a weights file saved by mnist.py")
    name = OLD_NAMES.get(name, name)
    if name not in MODELS:
        raise UserError(f"{path} holds weights of an unknown architecture {name!r}")
    model = build_model(name).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"{path} does not hold weights that fit the {name!r} architecture") from None
    return model.eval()


def save_grid(path, images, **grid):
    """uint8 images N×1×28×28 as one PNG grid, written atomically."""
    # imported only here: importing torchvision takes a second
    from torchvision.utils import save_image

    atomic_write(path, lambda tmp: save_image(images.float() / 255, tmp, pad_value=0.5, format="png", **grid))


def write_json(path, obj):
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


# ---------------------------------------------------------------- command line


def checked(kind, check):
    """An argparse type: kind, and check's (description, test) passed."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if check and not check[1](value):
            raise argparse.ArgumentTypeError(f"must be {check[0]}, not {text}")
        return value
    return parse


def model_name(text):
    return OLD_NAMES.get(text, text)


def make_parser(command, description, config=("device",), data=False):
    """A parser for `mnist.py command` with the flags of the Config fields named in config."""
    p = argparse.ArgumentParser(prog=f"mnist.py {command}".strip(), description=description, allow_abbrev=False)
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message} (see --help)\n")  # one line, no usage dump
    if data:
        p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"),
                       help="torchvision root holding MNIST/raw (default: $MNIST_DATA_DIR, else ./data)")
    for f in fields(Config):
        if f.name not in config:
            continue
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        if f.type is bool:
            p.add_argument(flag, action="store_true", help=meta["help"])
        elif f.name == "model":
            p.add_argument(flag, type=model_name, choices=sorted(MODELS), default=f.default,
                           help=f"{meta['help']} (default: %(default)s)")
        else:
            p.add_argument(flag, type=f.type if f.type is str else checked(f.type, meta["check"]),
                           choices=meta["choices"], default=f.default, help=f"{meta['help']} (default: %(default)s)")
    return p


def check_args(p, args, *outputs):
    """Refuses, before any work, a device that is not there and files that cannot be written."""
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    for path in filter(None, outputs):
        if Path(path).is_dir():
            p.error(f"cannot write {path}: it is a folder")
        folder = Path(path).parent
        if not folder.is_dir():
            p.error(f"cannot write {path}: there is no folder {folder}")
        try:  # where atomic_write will put its temporary file
            fd, probe = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=folder)
        except OSError as e:
            p.error(f"cannot write {path}: the folder {folder} takes no new files ({e.strerror})")
        os.close(fd)
        os.remove(probe)


def summarise(runs, key):
    values = [r[key] for r in runs]
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def train_command(argv):
    p = make_parser("", "Train a BatchNorm CNN of under 25k parameters on MNIST and pen digits for one epoch.",
                    [f.name for f in fields(Config)], data=True)
    p.epilog = "other commands: mnist.py evaluate --help, mnist.py predict --help, mnist.py serve --help"
    p.add_argument("--runs", type=checked(int, POSITIVE), default=1, help="train this many runs, seeds S, S+1, ...")
    p.add_argument("--out", default="mnist_cnn.pt", help="where the weights go (default: %(default)s)")
    p.add_argument("--metrics-json", metavar="PATH", help="also write the metrics to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")
    args = p.parse_args(argv)
    check_args(p, args, args.out, args.metrics_json)
    if args.fold and not args.val:
        p.error("--fold chooses the pen writers --val holds out: give --val too")
    clock = {"start": time.time()}  # when each phase ended, for bench.py's table of where a process's time goes
    cfg = Config(**{f.name: getattr(args, f.name) for f in fields(Config)})
    device = pick_device(cfg.device)
    from torchsummary import summary

    if fetched := datafiles.find_mnist(args.data_dir):  # one line, only when it was not there
        print(fetched)
    data = {split: (x.to(device), y.to(device)) for split, (x, y) in load_mnist(args.data_dir).items()}
    if not cfg.mnist_only or cfg.val:
        data["pen"] = {k: v.to(device) for k, v in datafiles.load_pendigits().items()}
    clock["data"] = time.time()
    summary(build_model(cfg.model).to(device), (1, 28, 28), device=device.type)
    clock["layer table"] = time.time()
    if device.type == "cuda":  # CUDA loads its kernels on first use, for seconds: once, untimed, on two batches
        images, labels = data["train"]
        train(build_model(cfg.model).to(device), images[:2 * cfg.batch_size], labels[:2 * cfg.batch_size], cfg)
    clock["warm-up"] = time.time()
    split = "val" if cfg.val else "test"
    keys = [f"{split}_accuracy"] + (["pen_val_accuracy"] if cfg.val else [])  # what a run is judged by
    folds = [cfg.fold] if cfg.fold or not cfg.val else range(1, len(PEN_FOLDS) + 1)
    plan = [(cfg.seed + i, fold) for i in range(args.runs) for fold in folds]
    runs = []
    for i, (seed, fold) in enumerate(plan):
        model, metrics = train_and_evaluate(Config(**{**asdict(cfg), "seed": seed, "fold": fold}), data,
                                            not args.no_progress)
        runs.append(metrics)
        if len(plan) > 1:
            writers = f" writers {PEN_FOLDS[fold - 1].start}-{PEN_FOLDS[fold - 1].stop - 1} held out" if fold else ""
            print(f"run {i + 1}/{len(plan)} seed {seed}{writers}: " + ", ".join(
                f"{k.replace('_', ' ')} {metrics[k]:.2f}%" for k in keys) + f", train {metrics['train_seconds']:.1f} s")
    clock["runs"] = time.time()
    save_weights(model, cfg.model, args.out)
    clock["save"] = time.time()
    result, mean = dict(runs[-1], clock=clock), {k: metrics[k] for k in keys}
    if len(runs) > 1:
        result["runs"] = runs
        for k in keys:
            stats = summarise(runs, k)
            result.update({f"{k}_{name}": v for name, v in stats.items()})
            mean[k] = stats["mean"]
            print(f"{k.replace('_', ' ')} over {len(runs)} runs: mean {stats['mean']:.2f}% ± {stats['std']:.2f} "
                  f"(std), min {stats['min']:.2f}%, max {stats['max']:.2f}%")
    if args.metrics_json:
        write_json(args.metrics_json, result)
    if cfg.val:  # (the mean over the runs)
        per_digit = [statistics.mean(r["pen_val_per_digit"][d] for r in runs) for d in range(10)]
        print("pen digits of the held-out writers, per digit: " + "  ".join(f"{d}: {a:.1f}%" for d, a in
                                                                            enumerate(per_digit)))
        if len(folds) > 1:
            by_fold = [statistics.mean(r["pen_val_accuracy"] for r in runs if r["fold"] == fold) for fold in folds]
            print("... per fold: " + "  ".join(f"writers {w.start}-{w.stop - 1}: {a:.2f}%" for w, a in
                                               zip(PEN_FOLDS, by_fold)))
    pen = f", held-out writers' pen digits {mean['pen_val_accuracy']:.2f}%" if cfg.val else ""
    print(f"{cfg.model}, {metrics['params']:,} parameters, {cfg.epochs} epoch(s) of MNIST"
          f"{'' if cfg.mnist_only else ' and pen digits'} on {device.type}: {split} accuracy "
          f"{mean[f'{split}_accuracy']:.2f}%{pen}, {metrics['train_seconds']:.1f} s of training; weights in {args.out}")
    return 0


def evaluate_command(argv):
    import evaluate  # a saved model's figures: its own file, loaded only for this command

    return evaluate.main(argv)


def predict_command(argv):
    import predict  # using the model: its own file, loaded only for this command

    return predict.main(argv)


def serve_command(argv):
    import serve  # the server and its page: their own file, loaded only for this command

    return serve.main(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if sys.version_info < (3, 10):  # noqa: UP036 -- said in one sentence, not as a traceback further on
        print(f"mnist.py: error: Python 3.10 or newer is needed, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):  # →, ± and × on a Windows pipe (cp1252): a stand-in, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    commands = {"evaluate": evaluate_command, "predict": predict_command, "serve": serve_command}
    command = commands.get(argv[0] if argv else None)
    try:
        return command(argv[1:]) if command else train_command(argv)
    except (UserError, datafiles.DataError) as e:
        print(f"mnist.py: error: {e}", file=sys.stderr)
    except BrokenPipeError:  # the output went to a program that stopped reading (| head): stop quietly
        sys.stdout = None
        return 1
    except OSError as e:  # an unreadable data file, a full disk
        print(f"mnist.py: error: {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
    except KeyboardInterrupt:
        print("mnist.py: interrupted; no file was left half-written", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.modules["mnist"] = sys.modules["__main__"]  # `import mnist` in predict.py and serve.py: this module, no copy
    status = main()
    for stream in (sys.stdout, sys.stderr):
        if stream:
            stream.flush()
    os._exit(status)  # every file is written and closed: skip tearing down torch's modules, 1-2 s
