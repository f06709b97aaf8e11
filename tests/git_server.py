"""Git remotes on loopback for the repository integration's tests: repositories made with the
git command line, and `git http-backend` (git's own smart-HTTP server) run as a CGI behind a
small stdlib HTTP server, which can also stall or ask for a token."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["GitHttpServer", "commit", "git", "make_repository", "publish", "serve_git"]

_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}
_BACKEND = Path(subprocess.check_output(["git", "--exec-path"], text=True).strip()) / (
    "git-http-backend"
)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **_ENV},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(work: Path, message: str) -> str:
    git("add", "-A", cwd=work)
    git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def make_repository(work: Path, files: Mapping[str, str | bytes] | None = None) -> str:
    """A working repository at `work` on branch main, with `files` committed; its commit."""
    work.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=work)
    for name, body in (files or {}).items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)
    return commit(work, "first")


def publish(work: Path, bare: Path) -> Path:
    """`work` pushed to a bare repository at `bare` that serves partial clones."""
    if not bare.exists():
        git("init", "-q", "--bare", "-b", "main", str(bare), cwd=work.parent)
        git("config", "uploadpack.allowFilter", "true", cwd=bare)
        git("config", "http.receivepack", "false", cwd=bare)
    git("push", "-q", "--force", str(bare), "main", cwd=work)
    return bare


class GitHttpServer:
    """`git http-backend` for the bare repositories under `root`, on 127.0.0.1. `stall`: every
    request is held without an answer until the server stops. `token`: the Basic password
    every request must carry."""

    def __init__(self, root: Path, *, stall: bool = False, token: str | None = None) -> None:
        self.root = root
        self.stall = stall
        self.token = token
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self)

            def do_POST(self) -> None:
                server.handle(self)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append(request.path)
        if self.stall:
            self._stop.wait(60)
            return
        authorization = request.headers.get("Authorization")
        self.authorizations.append(authorization)
        if self.token is not None:
            given = authorization or ""
            if not given.startswith("Basic ") or not _password_is(given, self.token):
                request.send_response(401)
                request.send_header("WWW-Authenticate", 'Basic realm="git"')
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
        path, _, query = request.path.partition("?")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": request.command,
            "CONTENT_TYPE": request.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": "127.0.0.1",
        }
        for header in ("Git-Protocol", "Content-Encoding"):
            if request.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = request.headers[header]
        out = subprocess.run(
            [str(_BACKEND)], input=body, env=env, capture_output=True, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)


def _password_is(authorization: str, token: str) -> bool:
    try:
        decoded = base64.b64decode(authorization.removeprefix("Basic ")).decode()
    except ValueError:
        return False
    return decoded.partition(":")[2] == token


@contextmanager
def serve_git(root: Path, **options: object) -> Iterator[GitHttpServer]:
    server = GitHttpServer(root, **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
