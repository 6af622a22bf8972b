"""Side-by-side timing: the earlier public recipe, `python mnist.py --mnist-only` and `python mnist.py`, each
in its own process, and `python mnist.py predict` on transparent canvases against opaque photos, and on the
page's pad with one digit against five.

    python bench.py                   # 3 runs of each on the CPU, seeds 0-2
    python bench.py --device cuda     # the same on a GPU

The earlier recipe: its 11,130-parameter model, torchvision's MNIST with ToTensor() and
Normalize((0.1307,), (0.3081,)) per sample through a shuffled DataLoader, batch 64, Adam 1e-3,
one epoch, then the test set. Prints the median of each figure and the ratios: mnist.py against the earlier
recipe, the pen digits' cost (mnist.py against --mnist-only), predict's time for each further picture of
each kind (from one picture and from 100 of each), and where the time of `python mnist.py` goes, phase by
phase (from the clock it writes into --metrics-json). On a GPU both programs take a few untimed steps first:
CUDA loads its kernels on first use, for seconds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def earlier_recipe(data_dir, device, metrics_json, seed):
    """The earlier solution's training script, as it was; writes its metrics to metrics_json."""
    import torch
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    import mnist

    if device == "cuda":  # as in mnist.py: CUDA loads its kernels on first use, for seconds; leave that untimed
        warm = mnist.MODELS["cnn11k"]().to(device)
        x, y = torch.zeros(64, 1, 28, 28, device=device), torch.zeros(64, dtype=torch.long, device=device)
        F.cross_entropy(warm(x), y).backward()
        torch.optim.Adam(warm.parameters()).step()
    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_loader = torch.utils.data.DataLoader(datasets.MNIST(data_dir, train=True, transform=tf),
                                               batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(datasets.MNIST(data_dir, train=False, transform=tf), batch_size=1000)
    model = mnist.MODELS["cnn11k"]().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    t0 = time.perf_counter()
    model.train()
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    sync()
    t1 = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    Path(metrics_json).write_text(json.dumps({"train_seconds": t1 - t0, "test_accuracy": correct / 100}))


def measure(cmd):
    """Runs cmd; returns (when it started, when it ended, peak resident memory in MB of that process alone,
    or None on Windows, which has no os.wait4)."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(proc.pid, 0)
        code, rss = os.waitstatus_to_exitcode(status), usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    else:
        code, rss = proc.wait(), None
    if code != 0:
        sys.exit(f"bench.py: error: {' '.join(cmd)} failed")
    return start, time.time(), rss


def phases(clock, start, end, m):
    """Seconds in each phase of one `python mnist.py` process, from the clock it wrote."""
    return {"start-up (Python, imports)": clock["start"] - start, "data": clock["data"] - clock["start"],
            "layer table": clock["layer table"] - clock["data"], "warm-up": clock["warm-up"] - clock["layer table"],
            "training": m["train_seconds"], "evaluation": clock["runs"] - clock["warm-up"] - m["train_seconds"],
            "save": clock["save"] - clock["runs"], "exit": end - clock["save"]}


def write_pictures(data_dir, folder, count):
    """count test digits as transparent canvases (canvas/*.png) and as opaque photos under uneven light
    (photo/*.jpg), each about 280 pixels square, as predict meets them; the first of each for one image."""
    import torch

    import datafiles
    import mnist
    from tools.samples import ink, jpeg, photo, transparent
    from tools.written_numbers import number_picture

    digits = mnist.load_mnist(data_dir, ["test"])["test"][0]
    gen = torch.Generator().manual_seed(0)
    for kind in ("canvas", "photo"):
        (folder / kind).mkdir()
    for i in range(count):
        amount = ink(digits[i], 8, [28, 28, 28, 28])
        (folder / "canvas" / f"{i}.png").write_bytes(transparent((0, 0, 0))(amount, gen))
        (folder / "photo" / f"{i}.jpg").write_bytes(jpeg(photo(amount, gen)))
    pen = datafiles.load_pendigits()
    for n in (1, 5):  # the page's pad, 1120×280, with one digit or five (wider where five need it)
        (folder / f"pad{n}").mkdir()
        for i in range(count):
            picked = torch.randint(len(pen["labels"]), (n,), generator=gen).tolist()
            (folder / f"pad{n}" / f"{i}.png").write_bytes(number_picture(pen, picked, "pad", gen, width=1120))
    return {kind: sorted(map(str, (folder / kind).iterdir())) for kind in ("canvas", "photo", "pad1", "pad5")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3, help="how many runs of each, alternating (default: %(default)s)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    p.add_argument("--earlier", action="store_true", help=argparse.SUPPRESS)  # the child process
    p.add_argument("--metrics-json", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.earlier:
        return earlier_recipe(args.data_dir, args.device, args.metrics_json, args.seed)

    if not hasattr(os, "wait4"):
        print("bench.py: peak memory is not measured on Windows, which has no os.wait4; times are.")
    programs = ("earlier recipe", "mnist.py --mnist-only", "mnist.py")
    results, steps = {name: [] for name in programs}, []
    predicts = {k: [] for k in ("one", "canvas", "photo", "pad1", "pad5")}
    with tempfile.TemporaryDirectory() as tmp:
        metrics, weights = Path(tmp) / "metrics.json", Path(tmp) / "w.pt"
        pictures = write_pictures(args.data_dir, Path(tmp), 100)
        mnist_py = [sys.executable, str(HERE / "mnist.py"), "--no-progress", "--out", str(weights)]
        commands = dict(zip(programs, ([sys.executable, str(HERE / "bench.py"), "--earlier"],
                                       mnist_py + ["--mnist-only"], mnist_py)))
        for i in range(args.pairs):
            for name, cmd in commands.items():
                cmd = cmd + ["--device", args.device, "--data-dir", args.data_dir, "--metrics-json", str(metrics),
                             "--seed", str(i)]
                start, end, rss = measure(cmd)
                m = json.loads(metrics.read_text())
                results[name].append({"process": end - start, "train": m["train_seconds"], "acc": m["test_accuracy"],
                                      "rss": rss or 0})
                if name == "mnist.py":
                    steps.append(phases(m["clock"], start, end, m))
                print(f"run {i + 1}/{args.pairs} {name:22s} process {end - start:5.1f} s  train "
                      f"{m['train_seconds']:5.1f} s  accuracy {m['test_accuracy']:.2f}%" +
                      (f"  peak {rss:,.0f} MB" if rss else ""), flush=True)
            for kind, paths in (("one", pictures["canvas"][:1]), *pictures.items()):
                start, end, _ = measure([sys.executable, str(HERE / "mnist.py"), "predict", *paths, "--weights",
                                         str(weights), "--device", args.device])
                predicts[kind].append(end - start)
            print(f"run {i + 1}/{args.pairs} predict: one picture {predicts['one'][-1]:.2f} s, 100 canvases "
                  f"{predicts['canvas'][-1]:.2f} s, 100 photos {predicts['photo'][-1]:.2f} s, 100 pads of one digit "
                  f"{predicts['pad1'][-1]:.2f} s, of five {predicts['pad5'][-1]:.2f} s", flush=True)

    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    print(f"\nmedians over {args.pairs} runs of each on {args.device} (run i trains each with seed i):")
    for name, m in med.items():
        acc = [r["acc"] for r in results[name]]
        spread = f" ± {statistics.stdev(acc):.2f}, min {min(acc):.2f}%" if len(acc) > 1 else ""
        print(f"  {name:22s} process {m['process']:5.1f} s  train {m['train']:5.2f} s  test accuracy, mean "
              f"{statistics.mean(acc):.2f}%{spread}" + (f"  peak {m['rss']:,.0f} MB" if m["rss"] else ""))
    old, alone, new = (med[name] for name in programs)
    print(f"  speed-up of python mnist.py over the earlier recipe: whole process "
          f"{old['process'] / new['process']:.2f}x, training {old['train'] / new['train']:.2f}x" +
          (f"; peak memory ratio {new['rss'] / old['rss']:.2f}" if new["rss"] else ""))
    print(f"  the pen digits' cost, python mnist.py over --mnist-only: training {new['train'] / alone['train']:.2f}x, "
          f"whole process {new['process'] / alone['process']:.2f}x")
    one, canvas, photo, pad1, pad5 = (statistics.median(predicts[k]) for k in ("one", "canvas", "photo", "pad1", "pad5"))
    per_canvas, per_photo, per_pad1, per_pad5 = ((t - one) / 99 for t in (canvas, photo, pad1, pad5))
    print(f"  python mnist.py predict: one picture {one:.2f} s in all; each further transparent canvas "
          f"{1000 * per_canvas:.1f} ms, each opaque photo {1000 * per_photo:.1f} ms ({per_photo / per_canvas:.2f}x); "
          f"each page's pad with one digit {1000 * per_pad1:.1f} ms, with five {1000 * per_pad5:.1f} ms "
          f"({per_pad5 / per_pad1:.2f}x)")
    print("where the whole python mnist.py goes, medians in seconds:")
    print("  " + ", ".join(f"{k} {statistics.median(s[k] for s in steps):.2f}" for k in steps[0]))


if __name__ == "__main__":
    main()
