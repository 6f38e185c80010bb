"""magcam.atomic: what an atomic write may replace, and what it must not."""

from __future__ import annotations

import os
import stat

import pytest
from magcam.atomic import NotRegularFileError, write_bytes_atomic


def test_a_device_pipe_or_directory_is_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    for target, kind in ((fifo, "not a regular file"), (folder, "a directory"), ("/dev/null", "not a regular file")):
        with pytest.raises(NotRegularFileError, match=kind):
            write_bytes_atomic(target, b"image")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "pipe"]  # no temporary left


def test_a_symlink_stays_a_link_to_the_new_file(tmp_path):
    (tmp_path / "v1.bin").write_bytes(b"old")
    link = tmp_path / "latest.bin"
    link.symlink_to("v1.bin")
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and (tmp_path / "v1.bin").read_bytes() == b"new"
    dangling = tmp_path / "next.bin"
    dangling.symlink_to("v2.bin")
    write_bytes_atomic(dangling, b"two")
    assert dangling.is_symlink() and (tmp_path / "v2.bin").read_bytes() == b"two"
    plain = tmp_path / "plain.bin"
    write_bytes_atomic(plain, b"x")
    write_bytes_atomic(plain, b"y")
    assert plain.read_bytes() == b"y"


def test_an_unwritable_folder_is_named_not_the_hidden_temporary(tmp_path):
    target = tmp_path / "missing" / "shot.dng"
    with pytest.raises(FileNotFoundError) as caught:
        write_bytes_atomic(target, b"image")
    assert caught.value.filename == str(target)  # not ".shot.dng.xxxx.part"
