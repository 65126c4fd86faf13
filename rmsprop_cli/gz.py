"""gzip decompressed in bounded pieces to a bounded total: a gzip bomb costs the limit, never more.

For the MNIST files a mirror sends (parts.py) and the gzipped IDX files given to
``rmsprop predict`` (images.py). Standard library only.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Iterator

GZIP_MAGIC = b"\x1f\x8b"


class GzipError(ValueError):
    """gzip data that is corrupt, truncated, or decompresses to more than allowed (``too_large``)."""

    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.too_large = too_large


def gunzip(chunks: Iterable[bytes], limit: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """Decompress gzip data arriving in ``chunks`` (one member or several, as ``gzip.decompress``),
    yielding at most ``piece`` bytes at a time and raising GzipError as soon as the output passes
    ``limit`` bytes: a gzip bomb costs ``limit`` bytes of work, never more, and no memory."""
    inflate, tail, total = None, b"", 0

    def counted(run) -> bytes:
        nonlocal total
        try:
            out = run()
        except zlib.error:
            raise GzipError("corrupt gzip data") from None
        total += len(out)
        if total > limit:
            raise GzipError(f"decompresses to more than {limit:,} bytes", too_large=True)
        return out

    for data in chunks:
        while data:
            if inflate is None:  # between members: zero padding, then the next header or the end
                data = (tail + data).lstrip(b"\0")
                tail = b""
                if len(data) < 2:
                    tail = data
                    break
                if data[:2] != GZIP_MAGIC:
                    raise GzipError("corrupt gzip data (trailing garbage)")
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = counted(lambda: inflate.decompress(data, min(piece, limit - total + 1)))
            if out:
                yield out
            if inflate.eof:
                data, inflate = inflate.unused_data + inflate.unconsumed_tail, None
            else:
                data = inflate.unconsumed_tail
    if tail:
        raise GzipError("corrupt gzip data (trailing garbage)")
    if inflate is not None:
        out = counted(inflate.flush)
        if out:
            yield out
        if not inflate.eof:
            raise GzipError("corrupt gzip data (truncated)")
    elif total == 0:
        raise GzipError("corrupt gzip data (empty)")
