"""Side-by-side timing: the earlier public recipe against `python mnist.py`, each in its own process.

    python bench.py                   # 3 pairs on the CPU, seeds 0-2
    python bench.py --device cuda     # the same on a GPU

The earlier recipe: its 11,130-parameter model, torchvision's MNIST with ToTensor() and
Normalize((0.1307,), (0.3081,)) per sample through a shuffled DataLoader, batch 64, Adam 1e-3,
one epoch, then the test set. Prints the median of each figure and the ratios, the whole process of
`python mnist.py predict` on one image, and where the time of `python mnist.py` goes, phase by phase
(from the clock it writes into --metrics-json). On a GPU both programs take a few untimed steps first:
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


def write_digit(data_dir, path):
    """The first test digit as a picture to predict: dark ink on white paper, 112 pixels square."""
    import torch.nn.functional as F
    from PIL import Image

    import mnist

    digit = mnist.load_mnist(data_dir, ["test"])["test"][0][0]
    big = F.interpolate(digit[None].float(), scale_factor=4, mode="bilinear")[0, 0]
    Image.fromarray((255 - big).clamp(0, 255).byte().numpy()).save(path)


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
    results, steps, predicts = {"earlier recipe": [], "mnist.py": []}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        metrics, weights, digit = Path(tmp) / "metrics.json", Path(tmp) / "w.pt", Path(tmp) / "digit.png"
        write_digit(args.data_dir, digit)
        commands = {
            "earlier recipe": [sys.executable, str(HERE / "bench.py"), "--earlier"],
            "mnist.py": [sys.executable, str(HERE / "mnist.py"), "--no-progress", "--out", str(weights)],
        }
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
                print(f"pair {i + 1}/{args.pairs} {name:15s} process {end - start:5.1f} s  train {m['train_seconds']:5.1f} s"
                      f"  accuracy {m['test_accuracy']:.2f}%" + (f"  peak {rss:,.0f} MB" if rss else ""), flush=True)
            start, end, _ = measure([sys.executable, str(HERE / "mnist.py"), "predict", str(digit), "--weights",
                                     str(weights), "--device", args.device])
            predicts.append(end - start)
            print(f"pair {i + 1}/{args.pairs} predict, one image: process {end - start:5.1f} s", flush=True)

    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    print(f"\nmedians over {args.pairs} pairs on {args.device} (pair i trains both with seed i):")
    for name, m in med.items():
        acc = [r["acc"] for r in results[name]]
        spread = f" ± {statistics.stdev(acc):.2f}, min {min(acc):.2f}%" if len(acc) > 1 else ""
        print(f"  {name:15s} process {m['process']:5.1f} s  train {m['train']:5.2f} s  accuracy, mean "
              f"{statistics.mean(acc):.2f}%{spread}" + (f"  peak {m['rss']:,.0f} MB" if m["rss"] else ""))
    print(f"  python mnist.py predict, one image: process {statistics.median(predicts):.2f} s")
    old, new = med["earlier recipe"], med["mnist.py"]
    print(f"  speed-up: whole process {old['process'] / new['process']:.2f}x, training {old['train'] / new['train']:.2f}x"
          + (f"; peak memory ratio {new['rss'] / old['rss']:.2f}" if new["rss"] else ""))
    print("where the whole python mnist.py goes, medians in seconds:")
    print("  " + ", ".join(f"{k} {statistics.median(s[k] for s in steps):.2f}" for k in steps[0]))


if __name__ == "__main__":
    main()
