"""Fetching under bad conditions: roots that cannot be written, hostile or damaged archives,
oversized downloads, copies laid out as torchvision leaves them, a full disk, and feature cache
folders and files that cannot be used. Each ends in exit status 2 and one message naming the
file or flag, with nothing half-written in place; no test reaches outside the machine."""

from __future__ import annotations

import errno
import http.server
import io
import os
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.fetchserver import cifar_archive, fetch_cli, mnist_files, runner, tar_gz
from support.formats import write_mnist

from triggerlab.cli import app, main
from triggerlab.config import DataConfig
from triggerlab.data.fetch import SOURCES, STAGING, UNPACKING, fetch_dataset
from triggerlab.data.fetch.archives import Budget, _write, unpack
from triggerlab.data.prepare import load_source
from triggerlab.errors import ConfigError, DataFormatError
from triggerlab.run.feature_cache import FeatureStore

MNIST_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def _unreachable() -> str:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/none"


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _spoil_last_member(data: bytes, *, method: int | None = None, flags: int = 0) -> bytes:
    """The zip with its last member's compression method or flag bits changed in both its
    local and its central header (as a tool that wrote them would have)."""
    out = bytearray(data)
    local, central = out.rfind(b"PK\x03\x04"), out.rfind(b"PK\x01\x02")
    for start, flag_at, method_at in ((local, 6, 8), (central, 8, 10)):
        if method is not None:
            out[start + method_at : start + method_at + 2] = method.to_bytes(2, "little")
        old = int.from_bytes(out[start + flag_at : start + flag_at + 2], "little")
        out[start + flag_at : start + flag_at + 2] = (old | flags).to_bytes(2, "little")
    return bytes(out)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _deny_mkdir_under(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    """Folders under ``base`` cannot be made, as for a user without the right (tests may run
    as root, for whom a read-only mode means nothing)."""
    real = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == base or base in self.parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)


# ---- roots that cannot be fetched into --------------------------------------------------------


def test_a_root_that_is_a_file_is_refused_and_left_as_it_was(tmp_path):
    root = tmp_path / "notes.txt"
    root.write_text("mine")
    result = fetch_cli("mnist", "--root", str(root), "--mirror", _unreachable())
    assert result.exit_code == 2, result.output
    assert f"the dataset folder {root} is a file, not a folder" in result.stderr
    assert root.read_text() == "mine" and sorted(tmp_path.iterdir()) == [root]


def test_a_root_under_a_file_and_a_data_folder_that_is_a_file_are_refused(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    under = fetch_cli("mnist", "--root", str(blocker / "mnist"), "--mirror", _unreachable())
    assert under.exit_code == 2, under.output
    assert f"cannot write in the dataset folder {blocker / 'mnist'}: Not a directory" in (
        under.stderr
    )
    from_env = fetch_cli(
        "cifar10", "--mirror", _unreachable(), env={"TRIGGERLAB_DATA": str(blocker)}
    )
    assert from_env.exit_code == 2
    assert "(from TRIGGERLAB_DATA)" in from_env.stderr and "Traceback" not in from_env.stderr
    assert blocker.read_text() == "" and sorted(tmp_path.iterdir()) == [blocker]


def test_a_root_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    _deny_mkdir_under(monkeypatch, tmp_path / "locked")
    root = tmp_path / "locked" / "mnist"
    with pytest.raises(ConfigError, match=f"cannot write in the dataset folder {root}: Permission"):
        fetch_dataset("mnist", root, mirror=_unreachable())
    result = fetch_cli("mnist", "--root", str(root), "--mirror", _unreachable())
    assert result.exit_code == 2 and "Permission denied" in result.stderr
    assert not (tmp_path / "locked").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="the superuser writes in read-only folders")
def test_a_read_only_root_is_refused(tmp_path):
    root = tmp_path / "ro"
    root.mkdir(mode=0o500)
    result = fetch_cli("mnist", "--root", str(root), "--mirror", _unreachable())
    assert result.exit_code == 2 and "Permission denied" in result.stderr


# ---- the mirror --------------------------------------------------------------------------------


def test_a_mirror_that_is_not_a_url_is_refused_naming_the_flag_or_variable(tmp_path):
    result = fetch_cli("mnist", "--root", str(tmp_path / "m"), "--mirror", "not a url")
    assert result.exit_code == 2, result.output
    assert "--mirror 'not a url': not a URL (expected one starting with http://" in result.stderr
    env = fetch_cli("mnist", "--root", str(tmp_path / "m"), env={"TRIGGERLAB_MIRROR": "ftp:/x"})
    assert env.exit_code == 2 and "TRIGGERLAB_MIRROR 'ftp:/x': not a URL" in env.stderr
    assert not (tmp_path / "m").exists()


# ---- archives ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ({"method": 99}, "is compressed by method 99, which cannot be read"),  # AES
        ({"method": 97}, "is compressed by method 97, which cannot be read"),  # WavPack
        ({"flags": 0x1}, "is encrypted"),
    ],
)
def test_zip_members_that_cannot_be_read_are_refused_before_anything_is_written(
    tmp_path, spoil, message
):
    archive = tmp_path / "a.zip"
    good = {"tiny-imagenet-200/wnids.txt": b"n01\n", "tiny-imagenet-200/words.txt": b"n01 x\n"}
    archive.write_bytes(_spoil_last_member(_zip(good), **spoil))
    with pytest.raises(
        DataFormatError, match=f"a.zip: member 'tiny-imagenet-200/words.txt' {message}"
    ):
        unpack(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == []


def test_a_zip_member_with_a_bad_crc_is_a_damaged_archive(tmp_path):
    archive = tmp_path / "a.zip"
    data = _zip({"x/file.txt": b"0123456789" * 10})
    archive.write_bytes(data.replace(b"0123456789", b"0123456780", 1))  # one changed byte
    with pytest.raises(DataFormatError, match=r"a.zip: damaged or unreadable archive \(Bad CRC"):
        unpack(archive, tmp_path / "out")


def test_member_names_holding_a_nul_byte_are_refused(tmp_path):
    zipped = tmp_path / "a.zip"
    zipped.write_bytes(_zip({"x/evilX.txt": b"hi"}).replace(b"evilX", b"evil\x00"))
    with pytest.raises(DataFormatError, match=r"a.zip: member 'x/evil\\x00.txt' holds a NUL"):
        unpack(zipped, tmp_path / "out")
    tarred = tmp_path / "a.tar"
    with tarfile.open(tarred, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ok.txt")
        info.pax_headers = {"path": "x/evil\x00.txt"}
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataFormatError, match="a.tar: member 'x/evil.x00.txt' holds a NUL"):
        unpack(tarred, tmp_path / "out")
    assert _files_under(tmp_path / "out") == []


def _declaring(name: str, size: int, followed_by: bytes = b"") -> bytes:
    """A tar whose member ``name`` declares ``size`` bytes and holds only ``followed_by``."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT) + followed_by + bytes(1024)


def test_a_tar_member_declaring_8_gib_is_refused_by_the_cli(server, tmp_path):
    url, served = server
    served.files["cifar-10-python.tar.gz"] = _declaring("cifar-10-batches-py/x", 8 << 30)
    served.checksums()
    root = tmp_path / "cifar"
    result = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2, result.output
    assert (
        "cifar-10-python.tar.gz: member 'cifar-10-batches-py/x' declares 8,589.9 MB, more than "
        "the 200.0 MB this dataset's archive unpacks to; refused before anything was written"
    ) in result.stderr
    assert _files_under(root) == []


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_zip({"a.txt": b"a", "zeros.bin": bytes(4_000_000)}, zipfile.ZIP_DEFLATED))
    assert archive.stat().st_size < 10_000
    with pytest.raises(DataFormatError, match=r"'zeros.bin' declares 4.0 MB, more than the 1.0 MB"):
        unpack(archive, tmp_path / "out", limit=1_000_000)
    assert _files_under(tmp_path / "out") == []


def test_members_that_add_up_past_the_bound_are_refused(tmp_path):
    archive = tmp_path / "many.tar"
    archive.write_bytes(tar_gz(tmp_path, {f"f{i}": bytes(400_000) for i in range(3)}))
    with pytest.raises(DataFormatError, match=r"its members declare 1.2 MB by 'f2', more than"):
        unpack(archive, tmp_path / "out", limit=1_000_000)
    assert _files_under(tmp_path / "out") == []


def test_bytes_written_past_the_bound_are_stopped_whatever_a_member_declared(tmp_path):
    budget = Budget(tmp_path / "a.zip", limit=10)
    entries = [(Path("x.bin"), False, "x.bin", lambda: io.BytesIO(bytes(11)))]
    with pytest.raises(DataFormatError, match="member 'x.bin' unpacks past the 10 bytes"):
        _write(tmp_path, entries, budget)  # type: ignore[arg-type]


def test_every_fetched_file_has_a_download_bound_and_archives_an_unpacked_one():
    for src in SOURCES.values():
        for remote in src.files:
            assert remote.limit, remote.name
            assert not remote.extract or (remote.unpacked and remote.unpacked > remote.limit)


def test_a_refused_tar_bomb_leaves_nothing_in_the_root(server, tmp_path, monkeypatch):
    url, served = server
    (remote,) = SOURCES["cifar10"].files
    monkeypatch.setitem(
        SOURCES, "cifar10", replace(SOURCES["cifar10"], files=(replace(remote, unpacked=10**6),))
    )
    members = {"cifar-10-batches-py/batches.meta": b"x", "zeros.bin": bytes(3_000_000)}
    served.files["cifar-10-python.tar.gz"] = tar_gz(tmp_path, members)
    served.checksums()
    root = tmp_path / "cifar"
    result = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2 and "'zeros.bin' declares 3.0 MB" in result.stderr
    assert not root.exists()  # no zeros.bin, no unpacking folder, no refused download


def test_a_truncatedtar_gz_is_a_damaged_archive_not_aborted(server, tmp_path):
    url, served = server
    archive = cifar_archive(tmp_path / "made")
    served.files["cifar-10-python.tar.gz"] = archive[: len(archive) * 2 // 3]
    served.checksums()  # a mirror that vouches for the cut file
    root = tmp_path / "cifar"
    result = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2, result.output
    assert "error: cifar-10-python.tar.gz: damaged or unreadable archive" in result.stderr
    assert "Aborted" not in result.output
    assert not (root / "cifar-10-batches-py").exists() and not (root / UNPACKING).exists()


def test_an_archive_missing_a_file_puts_nothing_in_place(server, tmp_path):
    url, served = server
    archive = cifar_archive(tmp_path / "made")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        kept = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if not m.name.endswith("test_batch")
        }
    served.files["cifar-10-python.tar.gz"] = tar_gz(tmp_path, kept)
    served.checksums()
    root = tmp_path / "cifar"
    root.mkdir()
    result = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2
    assert (
        "the downloaded files lack cifar-10-batches-py/test_batch; nothing was put in place"
    ) in result.stderr
    assert list(root.iterdir()) == []  # not the five training batches, not the download


# ---- downloads ---------------------------------------------------------------------------------


class Endless(http.server.BaseHTTPRequestHandler):
    """A server that streams zeros for any file, with no length (or a false one)."""

    claimed: str | None = None  # a Content-Length header to send
    sent = 0  # bytes sent over all requests

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.claimed:
            self.send_header("Content-Length", self.claimed)
        self.end_headers()
        try:
            for _ in range(400):  # 26 MB at most: a bound for the test, not for the client
                self.wfile.write(bytes(1 << 16))
                type(self).sent += 1 << 16
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def endless() -> Iterator[tuple[str, type[Endless]]]:
    handler = type("Handler", (Endless,), {"sent": 0, "claimed": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_endless_download_is_cut_at_the_files_known_size(endless, tmp_path):
    url, _ = endless
    root = tmp_path / "mnist"
    result = fetch_cli("mnist", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2, result.output
    assert (
        f"{url}/{MNIST_TRAIN_IMAGES}: the server sends more than the 9,912,422 bytes (9.9 MB) "
        "the file has, so it is not that file; the download was stopped and deleted"
    ) in result.stderr
    assert not root.exists()  # the oversized part was deleted, and the folders made for it


def test_a_download_offering_more_than_the_file_has_is_refused_before_it_starts(endless, tmp_path):
    url, handler = endless
    handler.claimed = "200000000"
    result = fetch_cli("mnist", "--root", str(tmp_path / "m"), "--mirror", url)
    assert result.exit_code == 2 and "sends more than the 9,912,422 bytes" in result.stderr
    assert not (tmp_path / "m").exists()


def test_an_emptied_download_is_checked_again_and_fetched_anew(server, tmp_path):
    url, served = server
    served.files.update(mnist_files(tmp_path / "made"))
    served.checksums()
    root = tmp_path / "mnist"
    (root / STAGING).mkdir(parents=True)
    (root / STAGING / MNIST_TRAIN_IMAGES).write_bytes(b"")  # a verified file, emptied since
    result = fetch_cli("mnist", "--root", str(root), "--mirror", url)
    assert result.exit_code == 0, result.output
    assert (root / MNIST_TRAIN_IMAGES).read_bytes() == served.files[MNIST_TRAIN_IMAGES]


# ---- copies in torchvision's layout ------------------------------------------------------------


def test_an_uncompressed_mnist_copy_in_torchvisions_layout_is_used_without_the_network(
    tmp_path, monkeypatch
):
    root = tmp_path / "data"
    write_mnist(root / "MNIST" / "raw", n_train=12, n_test=6)  # *-ubyte, not gzipped
    monkeypatch.setenv("TRIGGERLAB_MIRROR", _unreachable())
    data = load_source(DataConfig(name="mnist", root=root, download=True))
    assert len(data.train) == 12 and len(data.test) == 6
    fetched = fetch_cli("mnist", "--root", str(root))
    assert fetched.exit_code == 0 and "already complete" in fetched.stdout
    check = runner.invoke(app, ["data", "check", "mnist", "--root", str(root)])
    assert check.exit_code == 0 and "12 training images, 6 test images" in check.stdout


def test_an_incomplete_mnist_copy_says_exactly_what_it_lacks(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_mnist(root / "MNIST" / "raw", n_train=12, n_test=6)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    mirror = _unreachable()
    result = fetch_cli("mnist", "--root", str(root), "--mirror", mirror)
    assert result.exit_code == 2
    lacks = (
        f"{root} lacks t10k-labels-idx1-ubyte (each gzipped or not, in the root or its "
        "MNIST/raw, raw, MNIST folder)"
    )
    assert lacks in result.stderr
    assert f"and place them in {root} (each gzipped" in result.stderr  # not "unpack them"
    check = runner.invoke(app, ["data", "check", "mnist", "--root", str(root)])
    assert check.exit_code == 2 and f"mnist: {lacks}" in check.stderr
    monkeypatch.setenv("TRIGGERLAB_MIRROR", mirror)
    with pytest.raises(ConfigError, match="lacks t10k-labels-idx1-ubyte \\("):
        load_source(DataConfig(name="mnist", root=root, download=True))


# ---- a full disk -------------------------------------------------------------------------------


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str):
    monkeypatch.setattr("sys.argv", ["triggerlab", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def _disk_full(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_during_a_download_is_one_message_saying_nothing_is_corrupted(
    server, tmp_path, monkeypatch, capsys
):
    url, served = server
    served.files.update(mnist_files(tmp_path / "made"))
    served.checksums()

    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            raise _disk_full(self.name)

    def full_open(path: Path, mode: str = "r") -> io.BytesIO:
        handle = Full()
        handle.name = str(path)  # type: ignore[misc]
        return handle

    monkeypatch.setattr("triggerlab.data.fetch.download.open", full_open, raising=False)
    root = tmp_path / "mnist"
    args = ["data", "fetch", "mnist", "--root", str(root), "--mirror", url, "-q"]
    code, err = _main(monkeypatch, capsys, *args)
    part = root / STAGING / f"{MNIST_TRAIN_IMAGES}.part"
    assert code == 2
    assert f"error: the disk is full while writing {part} (No space left on device)" in err
    assert "Nothing was corrupted" in err and "Traceback" not in err
    assert not list(root.glob("*.gz"))  # nothing in place


@pytest.mark.slow
def test_a_full_disk_ends_any_command_in_the_same_message(tmp_path, monkeypatch, capsys):
    def fsync(fd: int) -> None:
        raise _disk_full(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "frame.png"
    code, err = _main(
        monkeypatch, capsys, "triggers", "preview", "--trigger", "kind=patch", "--out", str(out)
    )
    assert code == 2, err
    assert "error: the disk is full while writing" in err and "Nothing was corrupted" in err
    assert list(tmp_path.iterdir()) == []  # no half-written image, no temporary file


def test_other_os_errors_still_surface_at_the_boundary(monkeypatch):
    def broken() -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("triggerlab.cli.app", broken)
    with pytest.raises(OSError, match="Input/output error"):
        main()


# ---- the feature cache -------------------------------------------------------------------------


def _store(folder: Path) -> FeatureStore:
    return FeatureStore(folder, {"dataset": "digits", "weights": "x"})


def test_a_feature_cache_folder_that_is_a_file_or_cannot_be_written_is_refused(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("TRIGGERLAB_CACHE", raising=False)
    blocker = tmp_path / "cache"
    blocker.write_text("")
    cases = [
        (blocker, f"feature cache folder {blocker}: File exists; .*set TRIGGERLAB_CACHE"),
        (blocker / "features", f"feature cache folder {blocker / 'features'}: Not a directory"),
        (tmp_path / "locked" / "features", "locked/features: Permission denied"),
    ]
    _deny_mkdir_under(monkeypatch, tmp_path / "locked")
    for folder, message in cases:
        with pytest.raises(ConfigError, match=message), _store(folder).building():
            pass
    assert blocker.read_text() == ""


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        ("empty features", "unreadable \\(No data left in file\\)"),
        ("empty meta", "unreadable"),
        ("meta a list", "[0-9a-f]{16}.json holds a JSON list, not an object"),
    ],
)
def test_a_damaged_feature_cache_file_is_refused_naming_it(tmp_path, spoil, why):
    store = _store(tmp_path)
    store.save(np.zeros((4, 2), dtype=np.float16), "print")
    assert store.load(4, "print") is not None
    if spoil == "empty features":
        store.features_path.write_bytes(b"")
    elif spoil == "empty meta":
        store.meta_path.write_bytes(b"")
    else:
        store.meta_path.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match=f"feature cache {store.features_path}: {why}"):
        store.load(4, "print")


@pytest.mark.slow
def test_a_run_whose_feature_cache_folder_is_a_file_exits_2_naming_it(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("")
    args = ["run", "-q", "--out", str(tmp_path / "runs"), "--set", "model.freeze=classifier"]
    args += ["--set", "train.epochs=1"]
    result = runner.invoke(app, args, env={"TRIGGERLAB_CACHE": str(blocker), "COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"feature cache folder {blocker / 'features'} (under TRIGGERLAB_CACHE)" in (
        result.stderr
    )
    assert not list((tmp_path / "runs").rglob("*.*"))  # no half-written run
