"""A real HTTP server on the loopback interface serving what a test puts there, and archives in
each dataset's real layout, for the fetching tests; nothing reaches outside the machine."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

from typer.testing import CliRunner

from support.formats import write_cifar10, write_mnist
from triggerlab.cli import app

runner = CliRunner()


class Served:
    """What the server holds and how it misbehaves, shared with its handler."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail: set[str] = set()  # names answered with 500
        self.cut_once: dict[str, int] = {}  # name -> bytes sent before the connection drops
        self.ranges: list[str] = []  # Range headers received

    def checksums(self, wrong: str | None = None) -> None:
        """An MD5SUMS file for every served file (``wrong``'s sum spoiled)."""
        lines = []
        for name, data in self.files.items():
            if name == "MD5SUMS":
                continue
            digest = hashlib.md5(data).hexdigest()
            lines.append(f"{'0' * 32 if name == wrong else digest}  {name}")
        self.files["MD5SUMS"] = ("\n".join(lines) + "\n").encode()


def handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            if name in served.fail:
                self.send_error(500, "server exploded")
                return
            if name not in served.files:
                self.send_error(404)
                return
            data, start = served.files[name], 0
            asked = self.headers.get("Range")
            if asked:
                served.ranges.append(asked)
                start = int(asked.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            cut = served.cut_once.pop(name, None)
            body = data[start:] if cut is None else data[start : start + cut]
            self.wfile.write(body)
            if cut is not None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@contextlib.contextmanager
def serve() -> Iterator[tuple[str, Served]]:
    """A server on a free loopback port: its base URL and what it serves."""
    served = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def mnist_files(folder: Path) -> dict[str, bytes]:
    write_mnist(folder, n_train=12, n_test=6, gz=True)
    return {path.name: path.read_bytes() for path in folder.glob("*.gz")}


def tar_gz(folder: Path, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cifar_archive(folder: Path) -> bytes:
    write_cifar10(folder)
    batches = folder / "cifar-10-batches-py"
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in sorted(batches.iterdir())}
    return tar_gz(folder, members)


def fetch_cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["data", "fetch", *args], env={"COLUMNS": "200", **(env or {})})
