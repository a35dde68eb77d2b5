"""Real processes on one cache: two at once share the work; one killed while it holds a claim,
or while it writes a shard, leaves nothing that stops or misleads the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from xmodal.store import EmbeddingStore

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from xmodal.encoders.base import TextEncoder
    from xmodal.store import EmbeddingStore

    cache, log, out, go, mode = sys.argv[1:6]

    class Letters(TextEncoder):
        spec = "letters"; dim = 6; batch_size = 5
        def embed_texts(self, texts):
            time.sleep(float(os.environ.get("DELAY", "0.2")))
            line = "".join(f"{os.getpid()}\\t{t}\\n" for t in texts).encode()
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, line)  # one append per batch: lines of two processes never mix
            os.close(fd)
            return np.array([[t.count(c) + 1 for c in "aeiost"] for t in texts], np.float32)

    if mode == "hang-in-write":  # the shard write starts, then the process is killed
        real = np.savez
        def savez(f, **arrays):
            real(f, **arrays)
            f.flush()
            Path(go + ".writing").touch()
            time.sleep(600)
        np.savez = savez
    while not Path(go).exists():
        time.sleep(0.01)
    texts = [f"caption {i}: a small test sentence" for i in range(60)]
    np.save(out, EmbeddingStore(cache, shard_size=5).texts(Letters(), texts))
    """
)
TEXTS = [f"caption {i}: a small test sentence" for i in range(60)]


def _start(tmp_path: Path, name: str, mode: str = "run", delay: float = 0.2) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [str(tmp_path / "cache"), str(tmp_path / "log.txt"), str(tmp_path / f"{name}.npy")]
    env = {**os.environ, "DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, str(script), *args, str(tmp_path / "go"), mode], env=env
    )


def _log(tmp_path: Path) -> list[tuple[int, str]]:
    lines = (tmp_path / "log.txt").read_text().splitlines()
    return [(int(pid), text) for pid, text in (line.split("\t") for line in lines)]


def _wait_for(check, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _whole_cache(tmp_path: Path) -> list[str]:
    keys = []
    store = EmbeddingStore(tmp_path / "cache")
    for shard in (tmp_path / "cache").rglob("shard-*.npz"):
        from xmodal.store.cache import read_shard

        keys += read_shard(shard)[0]
    assert not store.unreadable
    return keys


def test_two_runs_at_once_embed_each_item_once_and_agree(tmp_path):
    a, b = _start(tmp_path, "a"), _start(tmp_path, "b")
    (tmp_path / "go").touch()
    assert a.wait(timeout=120) == 0 and b.wait(timeout=120) == 0
    log = _log(tmp_path)
    assert sorted(t for _, t in log) == sorted(TEXTS)  # each item embedded once in all
    assert {pid for pid, _ in log} == {a.pid, b.pid}  # and the work was shared
    va, vb = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(va, vb)
    assert va.shape == (60, 6) and np.isfinite(va).all()
    keys = _whole_cache(tmp_path)
    assert len(keys) == len(set(keys)) == 60
    assert not list((tmp_path / "cache").rglob("*.claim"))


def test_a_claim_of_a_killed_run_is_taken_over(tmp_path):
    slow = _start(tmp_path, "slow", delay=30)  # claims a chunk, then stalls in the encoder
    (tmp_path / "go").touch()
    _wait_for(lambda: list((tmp_path / "cache").rglob("*.claim")), "a claim")
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait()
    after = _start(tmp_path, "after", delay=0)
    assert after.wait(timeout=120) == 0
    assert np.isfinite(np.load(tmp_path / "after.npy")).all()
    assert sorted(t for pid, t in _log(tmp_path) if pid == after.pid) == sorted(TEXTS)
    assert not list((tmp_path / "cache").rglob("*.claim"))


def test_a_run_killed_mid_write_leaves_no_partial_shard(tmp_path):
    hung = _start(tmp_path, "hung", mode="hang-in-write", delay=0)
    (tmp_path / "go").touch()
    _wait_for(lambda: (tmp_path / "go.writing").exists(), "a shard write")
    os.kill(hung.pid, signal.SIGKILL)
    hung.wait()
    (folder,) = (tmp_path / "cache").iterdir()
    assert list(folder.glob(".shard-*.tmp")) and not list(folder.glob("shard-*.npz"))
    after = _start(tmp_path, "after", delay=0)
    assert after.wait(timeout=120) == 0
    assert np.isfinite(np.load(tmp_path / "after.npy")).all()
    assert not list(folder.glob(".shard-*.tmp"))  # the dead writer's file is swept away
    keys = _whole_cache(tmp_path)
    assert len(keys) == len(set(keys)) == 60
