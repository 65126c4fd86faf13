"""A user's digit image, made into what MNIST's images are.

MNIST digits are white on black, their bounding box scaled to fit 20x20 with
the aspect ratio kept, then placed in a 28x28 frame so that their centre of
mass is at the centre.  A photo or a drawing is usually dark on light, any
size, anywhere in the frame; this module turns it into the same form.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from . import paths
from .errors import ConfigError, DataError, ImageError
from .gz import GZIP_MAGIC, GzipError, gunzip

SIDE, BOX = 28, 20
INK = 0.2  # a pixel counts as part of the digit above this fraction of the brightest ink

# Bounds on what `rmsprop predict` reads, so that no file can exhaust memory or time:
MAX_FILE_BYTES = 64 * 2**20   # any one file as given (an image, an IDX file, gzip or not)
MAX_IDX_BYTES = 64 * 2**20    # an IDX file decompressed (MNIST's largest is 47,040,016 bytes)
MAX_PIXELS = 50_000_000       # an image's width x height (a 48-megapixel photo fits)
WORK_SIDE = 2048              # larger images are first reduced (averaging pixels) to about this

# Raster formats only: Pillow would hand EPS files to Ghostscript, an interpreter, if installed.
FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP", "PPM", "QOI", "AVIF")
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP, PPM, QOI or AVIF"

_IDX_UBYTE = b"\x00\x00\x08"
_IDX_OTHER = {0x09: "signed bytes", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def load_image(path: Path) -> np.ndarray:
    """A PNG, JPEG or other raster image (FORMATS) -> uint8 (28, 28), white digit on black."""
    return decode_image(read_input(path), str(path))


def read_input(path) -> bytes:
    """A file given to predict, read once (a pipe cannot be read twice), bounded in size and time."""
    return paths.read_bounded(path, "image", MAX_FILE_BYTES, error=ImageError)


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.3g} megapixels"


def decode_image(blob: bytes, name: str) -> np.ndarray:
    """The bytes of an image file -> uint8 (28, 28), white digit on black; any failure is one ImageError."""
    from PIL import Image, ImageOps

    limit = f"this tool reads images of up to {_megapixels(MAX_PIXELS)}; scale it down first"
    Image.init()
    known = [f for f in FORMATS if f in Image.OPEN]  # this Pillow's build may lack some (AVIF)
    limit_was = Image.MAX_IMAGE_PIXELS
    try:
        # Pillow warns above its own limit (89 megapixels) and refuses above twice that, without
        # saying the size; ours is lower and checked below, with the size in hand, before decoding.
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(io.BytesIO(blob), formats=known)
        except MemoryError:
            raise
        except Exception:  # UnidentifiedImageError mostly; a plugin may raise its own on a bad header
            if blob[:2] == b"\x00\x00" and blob[2:3] and blob[2] in _IDX_OTHER:
                raise ImageError(f"{name} is an IDX file of {_IDX_OTHER[blob[2]]}; only IDX files of "
                                 "unsigned bytes (type 0x08, as MNIST's) hold images this tool reads") from None
            if blob[:2] == GZIP_MAGIC:
                raise ImageError(f"{name} is a gzip file, but not of an IDX image file") from None
            raise ImageError(f"{name} is not an image this tool can read ({FORMAT_NAMES})") from None
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name} is {w} x {h} pixels ({_megapixels(w * h)}); {limit}")
            try:
                gray = _grayscale(im, Image, ImageOps)
            except MemoryError:
                raise
            except Exception as e:  # Pillow's decoders raise OSError, ValueError, EOFError, struct.error, ...
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ImageError(f"{name} is a {im.format or 'image'} file that cannot be decoded "
                                 f"(damaged or truncated?): {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit_was
    return mnist_like(gray, name)


def _grayscale(im, Image, ImageOps) -> np.ndarray:
    """An opened image -> float64 (H, W) in 0..255, reduced to about WORK_SIDE on its longer side."""
    long_side = max(im.size)
    if long_side > WORK_SIDE:
        # JPEG can decode at 1/2, 1/4 or 1/8 of the size directly; others are reduced after decoding.
        im.draft(im.mode, (-(-im.size[0] * WORK_SIDE // long_side), -(-im.size[1] * WORK_SIDE // long_side)))
    if im.getexif().get(0x0112, 1) != 1:  # an EXIF orientation; exif_transpose copies even without one
        im = ImageOps.exif_transpose(im)
    if _has_alpha(im):
        mode = "RGBA"
    elif im.mode.startswith("I") or im.mode == "F":
        mode = "F"  # 16- and 32-bit pixels: convert("L") would clip them at 255
    else:
        mode = "L"
    factor = -(-max(im.size) // WORK_SIDE)
    if factor > 1:
        try:
            im = im.reduce(factor)  # before any conversion, so that no full-size copy is made
        except ValueError:  # a mode reduce() does not take (palette, 1-bit, 16-bit)
            im = im.convert(mode).reduce(factor)
    if im.mode != mode:
        im = im.convert(mode)
    pixels = np.asarray(im, dtype=np.float64)
    if im.mode == "RGBA":
        return _flatten_alpha(pixels)
    if im.mode == "F":
        top = pixels.max()
        return pixels * (255 / 65535 if top > 255 else 1.0)
    return pixels


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Transparent pixels take the colour of the page. Where the border is mostly transparent, the
    page is the transparency itself and the drawing its opaque part: it is shown on the colour that
    contrasts with the drawing (white ink on black, dark ink on white). Otherwise the page is opaque,
    and transparent holes (rounded corners) take the page's colour."""
    gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2 luma, as Pillow's "L"
    alpha = rgba[..., 3] / 255
    if alpha.min() == 1:
        return gray
    weight = alpha.sum()
    if weight == 0:
        return np.zeros_like(gray)  # fully transparent: mnist_like says no digit was found
    border = lambda a: np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # noqa: E731
    if np.median(border(alpha)) < 0.5:
        ink = (gray * alpha).sum() / weight
        page = 0.0 if ink > 127.5 else 255.0
    else:
        opaque = border(alpha) >= 0.5
        page = float(np.median(border(gray)[opaque]))
    return gray * alpha + page * (1 - alpha)


def mnist_like(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Grayscale (H, W) in 0..255 -> uint8 (28, 28) as MNIST was made."""
    if not np.isfinite(gray).all():  # a floating-point image (TIFF mode F) may hold NaN or infinity
        raise ImageError(f"{name}: some pixels are not numbers (NaN or infinity); save the image with "
                         "ordinary 8- or 16-bit pixels")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = np.median(border)
    ink = gray - background if background < 128 else background - gray  # light page: invert
    ink = np.clip(ink, 0, None)
    peak = ink.max()
    if peak < 16:
        raise ImageError(f"{name}: no digit found (the image is blank or has no contrast)")
    ink = ink / peak
    rows, cols = np.nonzero(ink > INK)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]

    from PIL import Image

    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(np.uint8(np.round(ink * 255))).resize(size, Image.LANCZOS)
    digit = np.asarray(small, dtype=np.float64)

    # Centre of mass to the frame's centre, as MNIST's makers did.
    total = digit.sum()
    if total == 0:
        raise ImageError(f"{name}: no digit found (the marks are too small to survive scaling to 20x20)")
    cy = (digit.sum(1) @ np.arange(digit.shape[0])) / total
    cx = (digit.sum(0) @ np.arange(digit.shape[1])) / total
    top = int(np.clip(round((SIDE - 1) / 2 - cy), 0, SIDE - digit.shape[0]))
    left = int(np.clip(round((SIDE - 1) / 2 - cx), 0, SIDE - digit.shape[1]))
    frame = np.zeros((SIDE, SIDE), np.uint8)
    frame[top:top + digit.shape[0], left:left + digit.shape[1]] = np.clip(np.round(digit), 0, 255)
    return frame


def load_inputs(files, indices: list[int] | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 28x28) for each file given to predict: an image, or an IDX image file (plain or
    gzip) at each of ``indices`` (default: its first image). Each file is read once, so that a pipe
    works, and is recognised by its content, not its name."""
    named, idx_files = [], 0
    for path in files:
        blob = read_input(path)
        if _is_idx(blob):
            idx_files += 1
            named += idx_images(blob, str(path), indices or [0])
        else:
            named.append((str(path), decode_image(blob, str(path))))
    if indices and not idx_files:
        raise ConfigError("--index picks images from an IDX file, and none of the files given is one")
    return named


def _is_idx(blob: bytes) -> bool:
    """A plain IDX file of unsigned bytes, or a gzip file whose content starts like one."""
    if blob[:2] == GZIP_MAGIC:
        import zlib

        try:
            return zlib.decompressobj(31).decompress(blob[:4096], 3) == _IDX_UBYTE
        except zlib.error:
            return False
    return blob[:3] == _IDX_UBYTE


def idx_images(blob: bytes, name: str, indices: list[int]) -> list[tuple[str, np.ndarray]]:
    """Images from the bytes of an IDX image file (plain or gzip), by index. The file may hold at
    most MAX_IDX_BYTES once decompressed: a header declaring more is refused before anything
    more is decompressed, and decompression stops there whatever the header says."""
    from .data import idx_header, parse_idx

    pieces = gunzip([blob], MAX_IDX_BYTES) if blob[:2] == GZIP_MAGIC else iter([blob])
    raw, size, checked, declared = [], 0, False, 0
    too_big = f"this tool reads IDX files of up to {MAX_IDX_BYTES / 2**20:g} MiB (MNIST's largest is 45 MiB)"
    try:
        for piece in pieces:
            raw.append(piece)
            size += len(piece)
            if checked and size > declared:  # more than the header says: stop decompressing here
                raise ImageError(f"{name}: IDX data has trailing bytes: shape {shape} needs "
                                 f"{declared - header:,} bytes after the header, the file holds more")
            if not checked and size >= 4:
                head = b"".join(raw)
                raw = [head]
                if size >= 4 + 4 * head[3]:  # the whole header: refuse a huge shape before reading on
                    dims, header = idx_header(head, name)
                    declared = header + int(np.prod(dims, dtype=object))
                    shape = " x ".join(map(str, dims))
                    if declared > MAX_IDX_BYTES:
                        raise ImageError(f"{name} declares IDX data of shape {shape} "
                                         f"({declared / 2**20:,.0f} MiB); {too_big}")
                    checked = True
    except GzipError as e:  # corrupt, truncated, or more than MAX_IDX_BYTES
        raise ImageError(f"{name}: {e}" + (f"; {too_big}" if e.too_large else "")) from None
    except DataError as e:
        raise ImageError(str(e)) from None
    try:
        images = parse_idx(b"".join(raw), name, copy=False)
    except DataError as e:
        raise ImageError(str(e)) from None
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        shape = " x ".join(map(str, images.shape))
        raise ImageError(f"{name} is an IDX file of shape {shape}, not of 28x28 images"
                         + (" (MNIST's labels?)" if images.ndim == 1 else ""))
    out = []
    for i in indices:
        if not 0 <= i < len(images):
            raise ImageError(f"--index {i} is out of range: {name} holds {len(images)} images"
                             + (f" (0 to {len(images) - 1})" if len(images) else ""))
        out.append((f"{name}[{i}]", images[i].copy()))
    return out
