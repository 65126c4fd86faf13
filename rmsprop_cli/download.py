"""Downloading one file of a dataset: from the first of its mirrors (URL prefixes or folders)
that has it, gzipped or not, retried where another try may succeed, verified, then cached.
Failures end as one DownloadError or ChecksumError that names every mirror tried, without the
passwords their URLs may hold.

Standard library only.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from . import paths
from .errors import ChecksumError, DownloadError
from .net import Pace, describe, opener, split_credentials
from .parts import Failed, Part, Unreachable, raw_cap, store

MIRROR_HINT = (
    "check your connection or pass --mirror URL_OR_DIR (a URL prefix or a folder holding the MNIST files)"
)
CHECKSUM_HINT = (
    "the files found are not the published MNIST files; "
    "pass --mirror URL_OR_DIR (a URL prefix or a folder holding the MNIST files)"
)

_CHUNK = 64 * 1024
_LOCAL_CHUNK = 4 * 1024 * 1024


class Reporter(Protocol):
    """Progress callbacks (the CLI implements them with rich); None means silent."""

    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


def _redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with the user name and password of every URL in it replaced by ***.

    ``secrets`` are the credentials of the mirrors in use, found by _userinfo: they are
    replaced wherever they appear, also where a password holds a space, '/', '#' or '?'
    that the general pattern would stop at."""
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, urllib.parse.unquote(secret)}:
            text = text.replace(form + "@", "***@").replace(form, "***")
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@", r"\1***@", text)


def _userinfo(url: str) -> str | None:
    """What stands between '://' and the last '@' of a URL (a user name and password), or None.
    A host cannot hold an '@', so the last one ends the credentials whatever they contain; but
    an '@' after a '/' with no ':' before it is in the path (https://host/mnist@v1/), not that."""
    _, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    found = rest[:rest.rindex("@")]
    return found if ":" in found or "/" not in found else None


def _reported(read, label: str, total: int | None, reporter: Reporter | None) -> Iterator[bytes]:
    """The chunks ``read()`` returns until an empty one, told to the reporter as they come."""
    if reporter:
        reporter.start(label, total)
    try:
        while chunk := read():
            if reporter:
                reporter.advance(len(chunk))
            yield chunk
    finally:
        if reporter:
            reporter.finish()


def _read_url(prefix: str, candidate: str, fname: str, size: int, part: Part, reporter: Reporter | None,
              timeout: float, speed: tuple[float, float]) -> None:
    bare, _ = split_credentials(prefix)
    request = urllib.request.Request(bare + candidate, headers={"User-Agent": "rmsprop-cli"})
    with Pace(*speed) as pace:
        try:
            with opener(prefix, pace).open(request, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.strip().isdigit() else None
                if total is not None and total > raw_cap(size):
                    raise Failed(f"announces {total:,} bytes, more than the file can be", "bad")
                # read1: whatever has arrived, so that the pace is seen; read(n) waits for all n bytes.
                chunks = _reported(lambda: pace.count(resp.read1(_CHUNK)), fname, total, reporter)
                try:
                    store(chunks, size, candidate, part)
                finally:
                    chunks.close()
        except BaseException:
            if pace.reason:  # the watcher cut the connection: that is the cause, whatever the symptom
                raise Unreachable(pace.reason) from None
            raise
        if pace.reason:
            raise Unreachable(pace.reason)
    # read1 returns short at EOF instead of raising, so check the length ourselves.
    if total is not None and pace.received != total:
        raise http.client.IncompleteRead(b"", total - pace.received)


def _fetch_url(prefix: str, candidate: str, fname: str, size: int, new_part, reporter: Reporter | None,
               timeout: float, retries: int, speed: tuple[float, float]) -> Part:
    for attempt in range(retries + 1):
        part = new_part()
        try:
            _read_url(prefix, candidate, fname, size, part, reporter, timeout, speed)
            return part
        except BaseException as e:
            part.discard()
            if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
                # Nothing came for `timeout` seconds: another try would wait as long again.
                raise Unreachable(f"too slow: nothing arrived for {timeout:g} s") from None
            last = _worth_retrying(e, prefix)
        if attempt < retries:
            time.sleep(0.5 * (attempt + 1))
    if isinstance(last, urllib.error.HTTPError):
        raise Failed(describe(last), "network")  # the server answers, so try its other file
    raise Unreachable(describe(last))


def _worth_retrying(e: BaseException, prefix: str) -> BaseException:
    """``e`` if another try may succeed (a timeout, a reset, HTTP 5xx); else the failure it means, raised."""
    if isinstance(e, urllib.error.HTTPError):
        # 4xx will not change on retry (S3 answers 403 for a missing key).
        if e.code == 401:
            raise Unreachable("HTTP 401: the user name and password in the URL were refused"
                               if split_credentials(prefix)[1] else
                               "HTTP 401: the mirror wants a user name and password; "
                               "put USER:PASSWORD@ before the host in the mirror's URL") from None
        if e.code < 500:
            raise Failed(describe(e), "missing") from None
        return e
    if isinstance(e, urllib.error.URLError):
        # No DNS answer or an unknown URL scheme: retrying only wastes time.
        if isinstance(e.reason, (socket.gaierror, str)):
            raise Unreachable(describe(e)) from None
        return e
    if isinstance(e, (OSError, http.client.HTTPException)):  # resets mid-body (timeouts end the mirror in _fetch_url)
        return e
    if isinstance(e, ValueError):  # e.g. a malformed host such as "http://[::1"
        raise Unreachable("invalid URL") from None
    raise e  # Failed, DataError (the disk), KeyboardInterrupt: not a network matter


def _fetch_local(folder: Path, candidate: str, fname: str, size: int, part: Part,
                 reporter: Reporter | None) -> None:
    try:
        if not stat.S_ISDIR(os.stat(folder).st_mode):
            raise Unreachable("not a folder")
    except FileNotFoundError:
        raise Unreachable("folder not found") from None
    except OSError as e:
        raise Unreachable(paths.os_reason(e)) from None
    path = folder / candidate
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Failed("not found", "missing") from None
    except OSError as e:
        raise Failed(paths.os_reason(e), "bad") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open for ever
        raise Failed(f"{paths.kind_of(st.st_mode)}, not a file", "bad")
    if st.st_size > raw_cap(size):
        raise Failed(f"{st.st_size:,} bytes, more than the file can be", "bad")

    try:
        with open(path, "rb") as f:
            stream = _reported(lambda: f.read(_LOCAL_CHUNK), fname, st.st_size, reporter)
            try:
                store(stream, size, candidate, part)
            finally:
                stream.close()
    except OSError as e:
        raise Failed(describe(e), "bad") from None


def _mirror_location(mirror: str | os.PathLike) -> tuple[str, str | Path]:
    """('url', prefix ending in '/') or ('dir', folder)."""
    text = os.fspath(mirror)
    if text.lower().startswith("file://"):
        return "dir", Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
    if "://" in text:
        return "url", text if text.endswith("/") else text + "/"
    return "dir", Path(text).expanduser()


def _say(reporter: Reporter | None, message: str) -> None:
    """A line for the user while fetching goes on: through the reporter's ``note`` where it has one,
    else on stderr; nothing when silent (no reporter)."""
    if reporter is None:
        return
    note = getattr(reporter, "note", None)
    if note is not None:
        note(message)
    else:
        print(f"Note: {message}", file=sys.stderr, flush=True)


def from_mirrors(
    fname: str,
    path: Path,
    mirrors: Sequence[str],
    reporter: Reporter | None,
    timeout: float,
    retries: int,
    dead: dict[str, str],
    keep: bool,
    speed: tuple[float, float],
    size: int,
    md5: str,
    diagnose: Callable[[bytes], str | None],
) -> bytes | None:
    """Fetch ``fname`` from the first mirror that has it, verify it and cache it at ``path``;
    its content if ``keep``. ``size`` is its published size (nothing larger is downloaded or
    decompressed), ``md5`` that of its content, and ``diagnose`` says what other content is instead
    (None: the checksum alone is wrong)."""
    tried: list[str] = []
    kinds: set[str] = set()
    new_part = lambda: Part(path, keep)  # noqa: E731
    secrets = [u for u in map(_userinfo, map(os.fspath, mirrors)) if u]
    for n, mirror in enumerate(mirrors):
        key, shown = os.fspath(mirror), _redact(os.fspath(mirror), secrets)
        if key in dead:  # already failed for an earlier file in this fetch
            tried.append(f"{shown} ({dead[key]})")
            kinds.add("network")
            continue
        where, location = _mirror_location(mirror)
        reasons: list[tuple[str, str]] = []
        for candidate in (fname + ".gz", fname):
            part = None
            try:
                if where == "url":
                    part = _fetch_url(location, candidate, fname, size, new_part, reporter, timeout, retries, speed)
                else:
                    part = new_part()
                    _fetch_local(location, candidate, fname, size, part, reporter)
                if part.md5.hexdigest() == md5:
                    data = part.content() if keep else None
                    part.commit()
                    part = None
                    return data
                problem = diagnose(part.content()) or "checksum mismatch"
                raise Failed(problem, "checksum" if problem == "checksum mismatch" else "bad")
            except Unreachable as e:
                dead[key] = e.reason
                reasons = [("", e.reason)]
                kinds.add(e.kind)
                if e.reason.startswith("too slow") and n + 1 < len(mirrors):
                    _say(reporter, _redact(f"{shown} is {e.reason}; trying the next mirror", secrets))
                break
            except Failed as e:
                reasons.append((candidate, e.reason))
                kinds.add(e.kind)
            finally:
                if part is not None:
                    part.discard()
        if len({r for _, r in reasons}) == 1:
            tried.append(f"{shown} ({reasons[0][1]})")
        else:
            tried.append(f"{shown} ({', '.join(f'{c}: {r}' for c, r in reasons)})")
    if not tried:
        raise DownloadError(f"cannot download {fname}: no mirrors given; {MIRROR_HINT}")
    summary = _redact(f"cannot download {fname}: tried {'; '.join(tried)}", secrets)
    if "network" in kinds or not kinds & {"checksum", "bad"}:
        raise DownloadError(f"{summary}; {MIRROR_HINT}")
    if "checksum" in kinds:
        raise ChecksumError(f"{summary}; {CHECKSUM_HINT}")
    raise DownloadError(f"{summary}; {CHECKSUM_HINT}")
