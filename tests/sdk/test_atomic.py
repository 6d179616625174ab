import os
import subprocess
import sys

import pytest

from spotrun.sdk.atomic import TMP_MARKER, atomic_write, is_internal_name, save_atomic
from spotrun.sdk.fingerprints import SIDECAR_DIR


def test_save_atomic_replaces_whole(tmp_path):
    target = tmp_path / "sub" / "ckpt.bin"
    save_atomic(target, b"old")
    save_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == [SIDECAR_DIR, "ckpt.bin"]


def test_text_mode(tmp_path):
    save_atomic(tmp_path / "a.json", '{"step": 3}')
    assert (tmp_path / "a.json").read_text() == '{"step": 3}'


def test_error_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "ckpt.bin"
    save_atomic(target, b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == [SIDECAR_DIR, "ckpt.bin"]


def test_killed_writer_never_exposes_partial_file(tmp_path):
    """A writer SIGKILLed mid-write leaves only a temp name, which the store skips."""
    target = tmp_path / "ckpt.bin"
    code = (
        "import os, sys\n"
        "from spotrun.sdk.atomic import atomic_write\n"
        f"with atomic_write({str(target)!r}) as f:\n"
        "    f.write(b'x' * 1024); f.flush()\n"
        "    sys.stdout.write('written\\n'); sys.stdout.flush()\n"
        "    sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"written\n"
    proc.kill()
    proc.wait()
    names = os.listdir(tmp_path)
    assert not target.exists()
    assert len(names) == 1 and is_internal_name(names[0]) and TMP_MARKER in names[0]


def test_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="modes"):
        with atomic_write(tmp_path / "x", "ab"):
            pass
