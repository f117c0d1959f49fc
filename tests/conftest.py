import os

import pytest
import torch

# Our machines have 2 cores; fewer when a long run shares them (two processes of 2 threads each on 2 cores
# slow both many times over). The pinned mask digests (test_bundled.py) were taken with 2 threads: the
# reduction order of other thread counts flips near-ties, so those tests fail there.
torch.set_num_threads(int(os.environ.get("CALIB_LAB_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def isolated_user_data(tmp_path, monkeypatch):
    """Saved sets and runs go to a temporary folder; the model/corpus cache is shared."""
    monkeypatch.setenv("CALIB_LAB_DATA", str(tmp_path / "user-data"))


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with one CUDA device, as far as device names and choices go (no kernel runs on it):
    for the logic that picks and names devices, tested without a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MB tmpfs to fill up (a full disk on demand); skipped where mounting is not allowed."""
    import subprocess

    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(folder) -> None:
    """Write into `folder` until its file system is full."""
    import errno

    with open(folder / "filler", "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):  # then the last partial blocks
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


# The banner of the plotly.js bundle: present when a figure embeds the library (works offline), absent
# when it only links a CDN.
PLOTLY_JS_MARKER = "plotly.js v"
