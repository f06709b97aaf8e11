"""A repository fetched to be read: a git remote cloned shallow and bare into a temporary folder,
its tree written out by Trailmap itself (so no hook, filter or checkout runs), within limits of
time, size and file count; or a local folder the operator allows, read where it is
(docs/integrations/repository.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urljoin, urlsplit

from trailmap.errors import ValidationFailed
from trailmap.graph.declared import Skipped
from trailmap.outbound import NameNotResolved, OutboundError, OutboundPolicy, origin

__all__ = [
    "Checkout",
    "CloneLimits",
    "Remote",
    "RepositoryRefused",
    "SubmoduleRemotes",
    "check_repository_settings",
    "check_url",
    "checkout",
    "resolve_remote",
]

_GIT: Final = shutil.which("git") or "git"
# Paths a tree may not hold (git's own fsck refuses them too, with transfer.fsckObjects).
_FORBIDDEN_PARTS: Final = frozenset({"", ".", "..", ".git"})
_MODE_FILE: Final = ("100644", "100755")
_MODE_LINK: Final = "120000"
_MODE_SUBMODULE: Final = "160000"
_WATCH_SECONDS: Final = 0.2
_CHUNK: Final = 64 * 1024
_NOT_A_REPOSITORY: Final = "a local folder, not a git repository"
_STDERR_KEPT: Final = 64 * 1024
_MAX_OUTPUT: Final = 64 * 1024 * 1024
# What one path of a tree listing may take, on average, before the listing is refused as too
# long: a tree of small trees repeated can name millions of paths with a few objects.
_LISTED_BYTES_PER_FILE: Final = 1024
_TRANSPORTS: Final = (
    "only https and http remotes are read (and local paths in folders the server's operator "
    "allows); ssh, git:// and other transports are not"
)
_CREDENTIALS: Final = (
    "the URL holds credentials; put the token in the integration's token setting, which is "
    "stored encrypted, and give the URL without them"
)


class RepositoryRefused(Exception):
    """The repository was not read; the message says why in a sentence, without secrets."""


@dataclass(frozen=True, slots=True)
class CloneLimits:
    seconds: float = 120.0
    max_bytes: int = 200 * 1024 * 1024
    max_files: int = 20_000
    max_file_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Remote:
    """Where a repository is read from. `url` is what git is given (None: `folder` is read
    in place); `config` the `-c` settings that pin it (the address the outbound guard
    checked); `protocols` the transports git may use."""

    shown: str
    url: str | None = None
    folder: Path | None = None
    config: tuple[tuple[str, str], ...] = ()
    protocols: str = ""
    host: str | None = None


@dataclass(slots=True)
class Checkout:
    root: Path
    revision: str | None
    skipped: list[Skipped] = field(default_factory=list)
    fetched_bytes: int = 0  # what the clone's objects take on disk
    files: int = 0
    gitlinks: list[_Entry] = field(default_factory=list)


# A submodule's URL, checked as the repository's own was (resolve_remote with the same roots
# and outbound guard).
SubmoduleRemotes = Callable[[str], Awaitable[Remote]]


def _within(path: Path, roots: Sequence[str]) -> bool:
    for root in roots:
        base = Path(os.path.realpath(root))
        if path == base or base in path.parents:
            return True
    return False


def check_repository_settings(
    kind: object, settings: object, *, local_roots: Sequence[str]
) -> None:
    """A repository integration's settings refused at once (ValidationFailed, by field) when
    no fetch could read its url: a transport not read, credentials in it, a local path this
    server does not allow (TRAILMAP_REPOSITORY_PATHS). Other kinds pass untouched."""
    if kind != "repository" or not isinstance(settings, dict):
        return
    if settings.get("submodules") not in (None, "true", "false"):
        raise ValidationFailed.field("settings.submodules", "true or false (the default)")
    url = settings.get("url")
    if not isinstance(url, str) or not url.strip():
        return
    try:
        check_url(url, local_roots=local_roots)
    except RepositoryRefused as refused:
        raise ValidationFailed.field("settings.url", str(refused)) from None


def check_url(url: str, *, local_roots: Sequence[str]) -> None:
    """Refuse (RepositoryRefused) at once what `resolve_remote` would refuse without looking
    on the network: a transport not read, credentials in the URL, a local path not allowed."""
    text = url.strip()
    if text.startswith(("file://", "/")):
        _local(text, local_roots)
        return
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise RepositoryRefused(_TRANSPORTS)
    if parts.username is not None or parts.password is not None:
        raise RepositoryRefused(_CREDENTIALS)
    if not parts.hostname:
        raise RepositoryRefused(f"{text!r} is not a URL git can fetch")


async def resolve_remote(
    url: str, *, local_roots: Sequence[str], outbound: OutboundPolicy
) -> Remote:
    """The remote `url` names, checked: an http(s) remote's host through the outbound guard
    (its address pinned), a local path or file:// URL only within `local_roots`."""
    text = url.strip()
    if text.startswith(("file://", "/")):
        return _local(text, local_roots)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RepositoryRefused(_TRANSPORTS)
    if parts.username is not None or parts.password is not None:
        raise RepositoryRefused(_CREDENTIALS)
    try:
        _, host, port = origin(text)
    except ValueError:
        raise RepositoryRefused(f"{text!r} is not a URL git can fetch") from None
    try:
        addresses = await outbound.resolve(host, port)
    except NameNotResolved as error:
        raise RepositoryRefused(f"the remote cannot be reached: {error}") from None
    except OutboundError as error:
        raise RepositoryRefused(f"refused by the outbound guard, nothing sent: {error}") from None
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    return Remote(
        shown=text,
        url=text,
        config=(("http.curloptResolve", f"{host}:{port}:{literal}"),),
        protocols="https" if scheme == "https" else "http:https",
        host=host,
    )


def _local(text: str, roots: Sequence[str]) -> Remote:
    if not roots:
        raise RepositoryRefused(
            "local paths are not allowed on this server: its operator lists the folders a "
            "repository may be read from in TRAILMAP_REPOSITORY_PATHS"
        )
    raw = unquote(urlsplit(text).path) if text.startswith("file://") else text
    if "\x00" in raw:
        raise RepositoryRefused("the path holds a NUL character")
    path = Path(os.path.realpath(raw))
    if not _within(path, roots):
        raise RepositoryRefused(
            f"{raw} is not within the folders this server reads repositories from "
            "(TRAILMAP_REPOSITORY_PATHS)"
        )
    if not path.is_dir():
        raise RepositoryRefused(f"{raw} is not a folder")
    dot_git = path / ".git"
    if dot_git.is_symlink() or dot_git.is_file():
        raise RepositoryRefused(
            f"{raw}/.git is a file or a link (a worktree or submodule whose repository is "
            "elsewhere); give the repository's own folder"
        )
    bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
    objects = path / "objects" if bare else dot_git / "objects"
    if (objects / "info" / "alternates").exists():
        raise RepositoryRefused(
            f"{raw} borrows objects from another repository (objects/info/alternates), which "
            "may be outside the allowed folders; not read"
        )
    if dot_git.is_dir() or bare:
        # A git repository: cloned like a remote (what is committed on its branch), so no
        # command runs in the folder itself and none of its hooks can.
        return Remote(shown=raw, url=path.as_uri(), protocols="file")
    return Remote(shown=raw, folder=path)


# -- running git ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Git:
    env: dict[str, str]
    config: tuple[tuple[str, str], ...]
    deadline: float
    limits: CloneLimits

    def argv(self, *args: str) -> list[str]:
        out = [_GIT]
        for key, value in self.config:
            out += ["-c", f"{key}={value}"]
        return [*out, *args]

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def run(
        self,
        *args: str,
        watch: Path | None = None,
        max_output: int = _MAX_OUTPUT,
        too_much: str = "git said more than Trailmap reads",
    ) -> bytes:
        """Run git; its output, or RepositoryRefused on failure, on the time limit (its whole
        process group killed), when `watch` grows beyond the size limit, or when its output
        passes `max_output` bytes (`too_much` says why). Only the end of what git writes on
        stderr is kept: a remote's messages can be endless."""
        process = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        watcher = asyncio.create_task(self._watch(process, watch)) if watch else None
        try:
            out, over, err = await asyncio.wait_for(
                _collect(process, max_output), max(0.01, self.remaining())
            )
        except TimeoutError:
            _kill(process)
            await process.wait()
            raise RepositoryRefused(
                f"the clone took longer than {self.limits.seconds:g} seconds and was stopped"
            ) from None
        except BaseException:
            _kill(process)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        if watcher is not None and watcher.done() and not watcher.cancelled() and watcher.result():
            raise RepositoryRefused(
                f"the clone grew beyond {self.limits.max_bytes} bytes and was stopped"
            )
        if over:
            raise RepositoryRefused(too_much)
        if process.returncode != 0:
            raise RepositoryRefused(f"git {args[0]} failed: {_last_line(err)}")
        return out

    async def _watch(self, process: asyncio.subprocess.Process, folder: Path) -> bool:
        while process.returncode is None:
            if _size(folder) > self.limits.max_bytes:
                _kill(process)
                return True
            await asyncio.sleep(_WATCH_SECONDS)
        return False


async def _collect(
    process: asyncio.subprocess.Process, max_output: int
) -> tuple[bytes, bool, bytes]:
    """stdout up to `max_output` bytes (True: it said more, and git was killed), the last
    64 KiB of stderr, once git has ended."""
    assert process.stdout is not None
    assert process.stderr is not None
    err_task = asyncio.create_task(_tail(process.stderr))
    try:
        chunks: list[bytes] = []
        size = 0
        over = False
        while chunk := await process.stdout.read(_CHUNK):
            size += len(chunk)
            if size > max_output:
                over = True
                _kill(process)
                break
            chunks.append(chunk)
        err = await err_task
        await process.wait()
        return b"".join(chunks), over, err
    finally:
        err_task.cancel()


async def _tail(stream: asyncio.StreamReader) -> bytes:
    kept = b""
    while chunk := await stream.read(_CHUNK):
        kept = (kept + chunk)[-_STDERR_KEPT:]
    return kept


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return ((fatal or lines or ["no message"])[-1])[:300]


def _size(folder: Path) -> int:
    total = 0
    for here, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(here) / name).lstat().st_size
    return total


def _environment(home: Path, protocols: str, token: str | None, host: str | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_ALLOW_PROTOCOL": protocols,
        "GIT_LFS_SKIP_SMUDGE": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "LC_ALL": "C",
    }
    if token:
        # The credential travels in the environment (read by git as configuration), never on
        # a command line another user of the host could see in `ps`.
        env["GIT_CONFIG_COUNT"] = "1"
        env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
        env["GIT_CONFIG_VALUE_0"] = f"Authorization: Basic {_basic(token, host)}"
    return env


def _basic(token: str, host: str | None) -> str:
    """user:token for HTTP Basic: GitHub takes `x-access-token`, GitLab `oauth2`; a token
    given as `user:password` is sent as it is."""
    if ":" in token:
        pair = token
    else:
        user = "x-access-token" if host and host.lower().endswith("github.com") else "oauth2"
        pair = f"{user}:{token}"
    return base64.b64encode(pair.encode()).decode()


_SAFE_CONFIG: Final = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("credential.helper", ""),
    ("http.followRedirects", "false"),
    ("protocol.allow", "never"),
    ("submodule.recurse", "false"),
    ("transfer.fsckObjects", "true"),
    ("init.templateDir", ""),
)


@asynccontextmanager
async def checkout(
    remote: Remote,
    *,
    branch: str | None = None,
    token: str | None = None,
    limits: CloneLimits | None = None,
    submodules: SubmoduleRemotes | None = None,
) -> AsyncIterator[Checkout]:
    """The repository's tree in a temporary folder (or a local folder where it is), removed
    afterwards. Raises RepositoryRefused with the reason when it cannot be read. With
    `submodules` (which checks each submodule's URL as the repository's was), the submodules
    the tree names are fetched too, one level deep, within the same limits."""
    limits = limits or CloneLimits()
    if remote.folder is not None:
        yield _local_folder(remote.folder, limits)
        return
    assert remote.url is not None
    work = Path(tempfile.mkdtemp(prefix="trailmap-repo-"))
    try:
        home = work / "home"
        home.mkdir()
        protocols = remote.protocols
        allowed = tuple((f"protocol.{p}.allow", "always") for p in protocols.split(":") if p)
        git = _Git(
            env=_environment(home, protocols, token, remote.host),
            config=(*_SAFE_CONFIG, *allowed, *remote.config),
            deadline=asyncio.get_running_loop().time() + limits.seconds,
            limits=limits,
        )
        result = await _clone(git, remote.url, branch, work, limits)
        if submodules is not None:
            await _submodules(git, remote, token, submodules, work, result, limits)
        yield result
    finally:
        try:
            await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)
        except asyncio.CancelledError:
            shutil.rmtree(work, ignore_errors=True)  # cancelled: removed here, then on
            raise


def _local_folder(folder: Path, limits: CloneLimits) -> Checkout:
    count = 0
    for _here, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if d != ".git"]
        count += len(files)
        if count > limits.max_files:
            raise RepositoryRefused(f"the folder holds more than {limits.max_files} files")
    return Checkout(root=folder, revision=None)


async def _clone(
    git: _Git, url: str, branch: str | None, work: Path, limits: CloneLimits
) -> Checkout:
    bare = work / "repository.git"
    args = ["clone", "--bare", "--quiet", "--depth", "1", "--single-branch", "--no-tags"]
    args += [f"--filter=blob:limit={limits.max_file_bytes + 1}"]
    if branch:
        args += ["--branch", branch]
    await git.run(*args, "--", url, str(bare), watch=work)
    # From here on git must not fetch anything more (a partial clone fetches a missing blob
    # when asked for it): no transport is allowed.
    git.env["GIT_ALLOW_PROTOCOL"] = "none"
    git.config = tuple((k, v) for k, v in git.config if not k.startswith("protocol."))
    git.config += (("protocol.allow", "never"),)
    gd = f"--git-dir={bare}"
    revision = (await git.run(gd, "rev-parse", "--verify", "HEAD^{commit}")).decode().strip()
    too_many = f"the repository holds more than {limits.max_files} files"
    listed = await git.run(
        gd,
        *("ls-tree", "-r", "-z", "--full-tree", "HEAD"),
        max_output=limits.max_files * _LISTED_BYTES_PER_FILE,
        too_much=too_many,
    )
    entries = _entries(listed)
    if len(entries) > limits.max_files:
        raise RepositoryRefused(too_many)
    missing_out = await git.run(gd, "rev-list", "--objects", "--missing=print", "HEAD")
    missing = {line[1:].decode() for line in missing_out.splitlines() if line.startswith(b"?")}
    tree = work / "tree"
    tree.mkdir()
    result = Checkout(root=tree, revision=revision, fetched_bytes=_size(bare))
    await _write_tree(git, gd, tree, entries, missing, limits, result.skipped)
    result.gitlinks = [e for e in entries if e.mode == _MODE_SUBMODULE and _safe_path(e.path)]
    result.files = len(entries)
    return result


async def _submodules(
    parent: _Git,
    remote: Remote,
    token: str | None,
    resolve: SubmoduleRemotes,
    work: Path,
    result: Checkout,
    limits: CloneLimits,
) -> None:
    """Each submodule the tree names (its commit, its URL in .gitmodules) fetched shallow and
    written out where it belongs; one that cannot be is skipped with the reason."""
    if not result.gitlinks:
        return
    urls = await _gitmodules(parent, result.root / ".gitmodules")
    for number, link in enumerate(result.gitlinks):
        result.skipped = [s for s in result.skipped if s.file != link.path]
        url = urls.get(link.path)
        if url is None:
            result.skipped.append(Skipped(link.path, "a submodule with no url in .gitmodules"))
            continue
        try:
            sub = await resolve(_absolute(url, remote.url or ""))
            if sub.url is None:
                raise RepositoryRefused(_NOT_A_REPOSITORY)  # noqa: TRY301 - skipped below
            same_host = sub.host is not None and sub.host == remote.host
            protocols = sub.protocols
            allowed = tuple((f"protocol.{p}.allow", "always") for p in protocols.split(":") if p)
            git = _Git(
                env=_environment(
                    Path(parent.env["HOME"]), protocols, token if same_host else None, sub.host
                ),
                config=(*_SAFE_CONFIG, *allowed, *sub.config),
                deadline=parent.deadline,
                limits=limits,
            )
            budget = limits.max_files - result.files
            written = await _fetch_submodule(
                git, sub.url, link, work / f"submodule-{number}.git", result, budget
            )
            result.files += written
        except RepositoryRefused as refused:
            result.skipped.append(Skipped(link.path, f"a submodule not fetched: {refused}"))


async def _fetch_submodule(
    git: _Git, url: str, link: _Entry, bare: Path, result: Checkout, budget: int
) -> int:
    limits = git.limits
    await git.run("init", "--quiet", "--bare", str(bare))
    gd = f"--git-dir={bare}"
    filtered = f"--filter=blob:limit={limits.max_file_bytes + 1}"
    await git.run(
        gd,
        "fetch",
        "--quiet",
        "--depth",
        "1",
        "--no-tags",
        filtered,
        "--",
        url,
        link.oid,
        watch=bare.parent,
    )
    git.env["GIT_ALLOW_PROTOCOL"] = "none"
    git.config = (
        *(kv for kv in git.config if not kv[0].startswith("protocol.")),
        ("protocol.allow", "never"),
    )
    too_many = f"the repository and its submodules hold more than {limits.max_files} files"
    listed = await git.run(
        gd,
        *("ls-tree", "-r", "-z", "--full-tree", link.oid),
        max_output=max(1, budget) * _LISTED_BYTES_PER_FILE,
        too_much=too_many,
    )
    entries = [_Entry(e.mode, e.oid, f"{link.path}/{e.path}") for e in _entries(listed)]
    if len(entries) > budget:
        raise RepositoryRefused(too_many)
    missing_out = await git.run(gd, "rev-list", "--objects", "--missing=print", link.oid)
    missing = {line[1:].decode() for line in missing_out.splitlines() if line.startswith(b"?")}
    await _write_tree(git, gd, result.root, entries, missing, limits, result.skipped)
    result.fetched_bytes += _size(bare)
    return len(entries)


async def _gitmodules(git: _Git, path: Path) -> dict[str, str]:
    """Each submodule's path to its URL, from the tree's .gitmodules (read as a plain file:
    git does not follow its include directives when given one)."""
    # A stat of a file Trailmap wrote itself, not worth a thread.
    if os.path.islink(path) or not os.path.isfile(path):  # noqa: ASYNC240, PTH113, PTH114
        return {}
    try:
        out = await git.run(
            "config", "--file", str(path), "--null", "--get-regexp", r"^submodule\..*\.(path|url)$"
        )
    except RepositoryRefused:
        return {}
    names: dict[str, dict[str, str]] = {}
    for record in out.decode("utf-8", "replace").split("\x00"):
        key, _, value = record.partition("\n")
        if not key.startswith("submodule."):
            continue
        name, _, field = key[len("submodule.") :].rpartition(".")
        names.setdefault(name, {})[field] = value
    return {v["path"]: v["url"] for v in names.values() if "path" in v and "url" in v}


def _absolute(url: str, parent: str) -> str:
    """A submodule's URL; a relative one (`../lib.git`) is relative to the repository's."""
    if url.startswith(("./", "../")):
        return urljoin(parent.rstrip("/") + "/", url)
    return url


@dataclass(frozen=True, slots=True)
class _Entry:
    mode: str
    oid: str
    path: str


def _entries(listed: bytes) -> list[_Entry]:
    out: list[_Entry] = []
    for record in listed.split(b"\x00"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, _kind, oid = meta.decode().split(" ")
        out.append(_Entry(mode, oid, raw_path.decode("utf-8", "surrogateescape")))
    return out


def _safe_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not path.startswith("/")
        and "\x00" not in path
        and not any(p.lower() in _FORBIDDEN_PARTS or "\\" in p for p in parts)
    )


def _wanted(
    entries: list[_Entry], missing: set[str], limits: CloneLimits, skipped: list[Skipped]
) -> list[_Entry]:
    """The files and links to write out, in that order; the rest skipped with a reason."""
    files: list[_Entry] = []
    links: list[_Entry] = []
    for entry in entries:
        if not _safe_path(entry.path):
            skipped.append(Skipped(entry.path[:300], "a path git would not write; not read"))
        elif entry.mode == _MODE_SUBMODULE:
            skipped.append(Skipped(entry.path, "a submodule: not fetched"))
        elif entry.oid in missing:
            skipped.append(
                Skipped(entry.path, f"larger than {limits.max_file_bytes} bytes: not fetched")
            )
        elif entry.mode in _MODE_FILE:
            files.append(entry)
        elif entry.mode == _MODE_LINK:
            links.append(entry)
    return [*files, *links]


async def _write_tree(
    git: _Git,
    gd: str,
    tree: Path,
    entries: list[_Entry],
    missing: set[str],
    limits: CloneLimits,
    skipped: list[Skipped],
) -> None:
    wanted = _wanted(entries, missing, limits, skipped)
    if not wanted:
        return
    sizes = await _sizes(git, gd, wanted)
    total = 0
    kept: list[_Entry] = []
    for entry in wanted:
        size = sizes.get(entry.oid, -1)
        if size < 0:
            skipped.append(Skipped(entry.path, "its content is not in the clone; not read"))
        elif size > limits.max_file_bytes:
            skipped.append(Skipped(entry.path, f"larger than {limits.max_file_bytes} bytes"))
        else:
            total += size
            kept.append(entry)
    if total > limits.max_bytes:
        raise RepositoryRefused(
            f"the repository's files take more than {limits.max_bytes} bytes; not read"
        )
    contents = await _contents(git, gd, [e.oid for e in kept])
    # Regular files first, links last: a link written first could lead a later path out.
    for entry in sorted(kept, key=lambda e: e.mode == _MODE_LINK):
        body = contents[entry.oid]
        if entry.mode == _MODE_LINK:
            _write_link(tree, entry, body, skipped)
        else:
            _write_file(tree, entry, body, skipped)


async def _sizes(git: _Git, gd: str, entries: list[_Entry]) -> dict[str, int]:
    asked = "\n".join(dict.fromkeys(e.oid for e in entries)) + "\n"
    out = await _with_input(git, asked.encode(), gd, "cat-file", "--batch-check")
    sizes: dict[str, int] = {}
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "blob":
            sizes[parts[0]] = int(parts[2])
    return sizes


async def _contents(git: _Git, gd: str, oids: list[str]) -> dict[str, bytes]:
    unique = list(dict.fromkeys(oids))
    if not unique:
        return {}
    out = await _with_input(git, ("\n".join(unique) + "\n").encode(), gd, "cat-file", "--batch")
    found: dict[str, bytes] = {}
    at = 0
    while at < len(out):
        end = out.index(b"\n", at)
        header = out[at:end].decode().split()
        at = end + 1
        if len(header) != 3:
            break
        size = int(header[2])
        found[header[0]] = out[at : at + size]
        at += size + 1
    return found


async def _with_input(git: _Git, data: bytes, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *git.argv(*args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git.env,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(data), max(0.01, git.remaining()))
    except TimeoutError:
        _kill(process)
        await process.wait()
        raise RepositoryRefused(
            f"reading the clone took longer than {git.limits.seconds:g} seconds"
        ) from None
    except BaseException:
        _kill(process)
        raise
    if process.returncode != 0:
        raise RepositoryRefused(f"git {args[1]} failed: {_last_line(err)}")
    return out


def _parents_are_folders(tree: Path, target: Path) -> bool:
    here = tree
    for part in target.relative_to(tree).parts[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            here.mkdir()
            continue
        if not stat.S_ISDIR(mode):
            return False
    return True


def _write_file(tree: Path, entry: _Entry, body: bytes, skipped: list[Skipped]) -> None:
    target = tree / entry.path
    if not _parents_are_folders(tree, target):
        skipped.append(Skipped(entry.path, "below something that is not a folder; not read"))
        return
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        skipped.append(Skipped(entry.path, f"not written: {type(error).__name__}"))
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)


def _write_link(tree: Path, entry: _Entry, body: bytes, skipped: list[Skipped]) -> None:
    target = tree / entry.path
    pointed = body.decode("utf-8", "replace")
    # Judged by its words alone (the folders it passes through are the tree's own, and links
    # are written last): an absolute target or one climbing out of the tree is not written.
    joined = os.path.normpath(str(PurePosixPath(entry.path).parent / pointed))
    if pointed.startswith("/") or joined == ".." or joined.startswith("../") or "\x00" in pointed:
        skipped.append(Skipped(entry.path, "a symbolic link out of the repository: not followed"))
        return
    if not _parents_are_folders(tree, target):
        skipped.append(Skipped(entry.path, "below something that is not a folder; not read"))
        return
    try:
        target.symlink_to(pointed)
    except OSError as error:
        skipped.append(Skipped(entry.path, f"not written: {type(error).__name__}"))
