"""A user's digit image, made into what MNIST's images are.

MNIST digits are white on black, their bounding box scaled to fit 20x20 with
the aspect ratio kept, then placed in a 28x28 frame so that their centre of
mass is at the centre.  A photo or a drawing is usually dark on light, any
size, anywhere in the frame; this module turns it into the same form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError, ImageError

SIDE, BOX = 28, 20
INK = 0.2  # a pixel counts as part of the digit above this fraction of the brightest ink


def load_image(path: Path) -> np.ndarray:
    """A PNG, JPEG or any image Pillow reads -> uint8 (28, 28), white digit on black."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P"):
                # Transparent drawings: what shows through is the page, take it as white.
                im = im.convert("RGBA")
                page = Image.new("RGBA", im.size, "white")
                im = Image.alpha_composite(page, im)
            gray = np.asarray(im.convert("L"), dtype=np.float64)
    except FileNotFoundError:
        raise ImageError(f"image {path} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder; give image files") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ImageError(f"{path} is not an image this tool can read (PNG, JPEG or another format Pillow knows)") from None
    return mnist_like(gray, str(path))


def mnist_like(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Grayscale (H, W) in 0..255 -> uint8 (28, 28) as MNIST was made."""
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


def load_idx_images(path: Path, indices: list[int]) -> list[tuple[str, np.ndarray]]:
    """Images from an IDX image file (plain or gzip), by index."""
    import gzip
    import zlib

    from .data import parse_idx

    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ImageError(f"{path} is a damaged gzip file: {e}") from None
    try:
        images = parse_idx(raw, str(path))
    except DataError as e:
        raise ImageError(str(e)) from None
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise ImageError(f"{path} holds arrays of shape {images.shape[1:]}, not 28x28 images")
    out = []
    for i in indices or [0]:
        if not 0 <= i < len(images):
            raise ImageError(f"--index {i} is out of range: {path} holds {len(images)} images"
                             + (f" (0 to {len(images) - 1})" if len(images) else ""))
        out.append((f"{path}[{i}]", images[i]))
    return out


def is_idx(path: Path) -> bool:
    """IDX files start with two zero bytes (plain) or are gzip named *-idx3-ubyte.gz."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:3] == b"\x00\x00\x08" or (head[:2] == b"\x1f\x8b" and "idx" in Path(path).name)
