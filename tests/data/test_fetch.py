"""Fetching datasets from a real HTTP server on the loopback interface, serving archives these
tests write in each dataset's real layout; no test reaches outside the machine."""

from __future__ import annotations

import socket
import tarfile
import zipfile

import pytest
from support.fetchserver import cifar_archive, fetch_cli, mnist_files, runner, tar_gz

from triggerlab.cli import app
from triggerlab.config import DataConfig
from triggerlab.data.fetch import STAGING, fetch_dataset
from triggerlab.data.fetch.archives import unpack
from triggerlab.data.prepare import load_source
from triggerlab.errors import ConfigError, DataFormatError


def test_a_clean_fetch_unpacks_verified_files_the_loader_reads(server, tmp_path):
    url, served = server
    served.files.update(mnist_files(tmp_path / "made"))
    served.checksums()
    root = tmp_path / "mnist"
    result = fetch_cli("mnist", "--root", str(root), "--mirror", url)
    assert result.exit_code == 0, result.stderr
    assert "fetched and verified" in result.stdout
    assert sorted(p.name for p in root.iterdir()) == sorted(served.files.keys() - {"MD5SUMS"})
    data = load_source(DataConfig(name="mnist", root=root))  # the loader's checks pass
    assert len(data.train) == 12 and len(data.test) == 6
    check = runner.invoke(app, ["data", "check", "mnist", "--root", str(root)])
    assert check.exit_code == 0 and "12 training images, 6 test images of 1x28x28" in check.stdout
    again = fetch_cli("mnist", "--root", str(root), "--mirror", url)
    assert again.exit_code == 0 and "already complete" in again.stdout


def test_data_download_fetches_on_first_use_then_uses_the_copy(server, tmp_path, monkeypatch):
    url, served = server
    served.files["cifar-10-python.tar.gz"] = cifar_archive(tmp_path / "made")
    served.checksums()
    monkeypatch.setenv("TRIGGERLAB_MIRROR", url)
    monkeypatch.setenv("TRIGGERLAB_DATA", str(tmp_path / "cache"))
    data = load_source(DataConfig(name="cifar10", download=True))
    assert (
        len(data.train) == 20 and (tmp_path / "cache" / "cifar10" / "cifar-10-batches-py").is_dir()
    )
    served.files.clear()  # a second use reads the copy: the server is not asked again
    assert len(load_source(DataConfig(name="cifar10", download=True)).train) == 20


def test_an_interrupted_fetch_leaves_nothing_in_place_and_resumes(server, tmp_path):
    url, served = server
    archive = cifar_archive(tmp_path / "made")
    served.files["cifar-10-python.tar.gz"] = archive
    served.checksums()
    served.cut_once["cifar-10-python.tar.gz"] = len(archive) // 2
    root = tmp_path / "cifar"
    first = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert first.exit_code == 2 and "could not download cifar10" in first.stderr
    assert not (root / "cifar-10-batches-py").exists()  # nothing that looks complete
    part = root / STAGING / "cifar-10-python.tar.gz.part"
    assert part.stat().st_size == len(archive) // 2
    second = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert second.exit_code == 0, second.stderr
    assert served.ranges == [f"bytes={len(archive) // 2}-"]  # it asked for the rest only
    assert len(load_source(DataConfig(name="cifar10", root=root)).test) == 4
    assert not (root / STAGING).exists()


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(server, tmp_path):
    url, served = server
    served.files["cifar-10-python.tar.gz"] = cifar_archive(tmp_path / "made")
    served.checksums(wrong="cifar-10-python.tar.gz")
    root = tmp_path / "cifar"
    result = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2
    assert "its MD5 is" in result.stderr and "expected 000000" in result.stderr
    assert not (root / "cifar-10-batches-py").exists()
    assert not root.exists()  # the bad download was deleted, and the folders made for it


def test_a_server_error_names_the_url_and_the_manual_route(server, tmp_path):
    url, served = server
    served.fail.add("cifar-10-python.tar.gz")
    result = fetch_cli("cifar10", "--root", str(tmp_path / "c"), "--mirror", url)
    assert result.exit_code == 2
    assert f"{url}/cifar-10-python.tar.gz: the server answered 500" in result.stderr
    assert "To place it by hand: download cifar-10-python.tar.gz from https://" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_archive_with_a_member_escaping_its_folder_is_refused(server, tmp_path):
    url, served = server
    members = {"cifar-10-batches-py/batches.meta": b"x", "../../escaped.txt": b"gotcha"}
    served.files["cifar-10-python.tar.gz"] = tar_gz(tmp_path, members)
    served.checksums()
    root = tmp_path / "deep" / "cifar"
    result = fetch_cli("cifar10", "--root", str(root), "--mirror", url)
    assert result.exit_code == 2 and "would be written outside its folder" in result.stderr
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (root / "cifar-10-batches-py").exists()


def test_an_unreachable_host_is_a_clean_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mirror = f"http://127.0.0.1:{port}/none"
    result = fetch_cli("mnist", "--root", str(tmp_path / "m"), "--mirror", mirror)
    assert result.exit_code == 2
    assert f"{mirror}/train-images-idx3-ubyte.gz: cannot connect" in result.stderr
    assert "To place it by hand" in result.stderr and "Traceback" not in result.stderr


def test_licensed_datasets_say_where_to_request_them_and_check_a_placed_copy(tmp_path):
    import h5py
    import numpy as np

    result = fetch_cli("mpiifacegaze", "--root", str(tmp_path))
    assert result.exit_code == 2 and "mpi-inf.mpg.de" in result.stdout
    assert f"triggerlab data check mpiifacegaze --root {tmp_path}" in result.stdout
    missing = runner.invoke(app, ["data", "check", "mpiifacegaze", "--root", str(tmp_path)])
    assert missing.exit_code == 2 and "lacks p00.mat" in missing.stderr
    for subject in range(15):
        with h5py.File(tmp_path / f"p{subject:02d}.mat", "w") as mat:
            mat.create_dataset("Data/data", data=np.zeros((2, 3, 8, 8), dtype=np.uint8))
            mat.create_dataset("Data/label", data=np.zeros((2, 4), dtype=np.float32))
    placed = runner.invoke(app, ["data", "check", "mpiifacegaze", "--root", str(tmp_path)])
    assert placed.exit_code == 0 and "30 images in the normalised release" in placed.stdout


def test_download_is_refused_for_datasets_that_are_not_fetched():
    with pytest.raises(ConfigError, match="data.download: 'digits' cannot be downloaded"):
        load_source(DataConfig(name="digits", download=True))


def test_unpacking_refuses_links_and_strips_a_leading_folder(tmp_path):
    zipped = tmp_path / "gtsrb.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("GTSRB/Final_Test/Images/00000.ppm", b"P6")
        archive.writestr("GTSRB/Readme.txt", b"hello")
    unpack(zipped, tmp_path / "out", strip="GTSRB/")
    assert (tmp_path / "out" / "Final_Test" / "Images" / "00000.ppm").read_bytes() == b"P6"
    linked = tmp_path / "linked.tar"
    with tarfile.open(linked, "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataFormatError, match="is a link or a special file"):
        unpack(linked, tmp_path / "other")
    assert not (tmp_path / "other" / "cifar-10-batches-py").exists()


def test_fetch_refuses_an_unknown_dataset(tmp_path):
    with pytest.raises(ConfigError, match="not a dataset to fetch"):
        fetch_dataset("imagenet", tmp_path)


@pytest.mark.slow
def test_a_run_with_data_download_fetches_first(server, tmp_path):
    url, served = server
    served.files.update(mnist_files(tmp_path / "made"))
    served.checksums()
    env = {"TRIGGERLAB_MIRROR": url, "TRIGGERLAB_DATA": str(tmp_path / "cache")}
    args = ["run", "--out", str(tmp_path / "run"), "-q"]
    for item in ("data.name=mnist", "data.download=true", "data.resize=16", "train.epochs=1"):
        args += ["--set", item]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert list((tmp_path / "run").rglob("summary.json"))


def test_check_reads_a_gtsrb_copy_laid_out_as_a_fetch_leaves_it(tmp_path):
    from support.formats import write_gtsrb

    write_gtsrb(tmp_path)
    result = runner.invoke(app, ["data", "check", "gtsrb", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "gtsrb: 4 training images" in result.stdout
