"""Draw the sample digits in data/samples/ (pen strokes, not MNIST images).

    python scripts/make_samples.py

Each digit is drawn with a thick round pen on a 280x280 page, as a user might
draw one in a paint program: dark ink on white, PNG.  One more, digit-3-photo.jpg,
imitates a photo of a pencil digit on grey paper (JPEG, noise, off-centre) to
show the preprocessing coping with both.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "data" / "samples"
PEN = 20

STROKES = {
    0: [("ellipse", (95, 40, 185, 240))],
    1: [("line", [(125, 75), (155, 40), (150, 240)])],
    2: [("arc", (80, 40, 200, 150), 190, 385), ("line", [(193, 115), (85, 240), (205, 240)])],
    3: [("arc", (90, 40, 190, 140), 200, 450), ("arc", (85, 135, 195, 245), 270, 520)],
    4: [("line", [(165, 40), (80, 170), (205, 170)]), ("line", [(170, 95), (170, 245)])],
    5: [("line", [(190, 45), (105, 45), (97, 130)]), ("arc", (80, 110, 195, 245), 220, 510)],
    6: [("line", [(170, 42), (100, 140), (90, 190)]), ("ellipse", (88, 135, 190, 245))],
    7: [("line", [(80, 50), (200, 50), (120, 245)])],
    8: [("ellipse", (100, 40, 180, 135)), ("ellipse", (90, 135, 190, 245))],
    9: [("ellipse", (90, 40, 190, 140)), ("line", [(188, 90), (172, 245)])],
}


def draw(digit: int, size: int = 280) -> Image.Image:
    page = Image.new("L", (size, size), 255)
    pen = ImageDraw.Draw(page)
    for kind, box, *angles in STROKES[digit]:
        if kind == "line":
            pen.line(box, fill=0, width=PEN, joint="curve")
            for x, y in (box[0], box[-1]):  # round pen ends
                pen.ellipse((x - PEN / 2, y - PEN / 2, x + PEN / 2, y + PEN / 2), fill=0)
        elif kind == "ellipse":
            pen.ellipse(box, outline=0, width=PEN)
        else:
            pen.arc(box, *angles, fill=0, width=PEN)
    # A slight slant, as hands do.
    return page.rotate(-6 + 3 * (digit % 4), resample=Image.BICUBIC, fillcolor=255)


def photo(digit: int) -> Image.Image:
    """Grey paper, soft pencil, sensor noise, the digit off-centre in a wide frame."""
    rng = np.random.default_rng(digit)
    ink = np.asarray(draw(digit).resize((140, 140), Image.LANCZOS), dtype=np.float64) / 255
    page = np.full((240, 320), 185.0)
    page[40:180, 150:290] = 185 * ink + 70 * (1 - ink)
    page += rng.normal(0, 6, page.shape)
    img = Image.fromarray(np.uint8(np.clip(page, 0, 255))).filter(ImageFilter.GaussianBlur(1.2))
    return img.convert("RGB")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for d in range(10):
        draw(d).save(OUT / f"digit-{d}.png", optimize=True)
    photo(3).save(OUT / "digit-3-photo.jpg", quality=85)
    print(f"wrote {len(list(OUT.iterdir()))} images to {OUT}")
