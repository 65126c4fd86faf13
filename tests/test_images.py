"""Users' own digit images made MNIST-like, and `rmsprop predict`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rmsprop_cli.cli import app
from rmsprop_cli.errors import ImageError
from rmsprop_cli.images import load_image, load_inputs, mnist_like

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "data" / "samples").glob("digit-*"))


def naive_center_of_mass(img):
    ys, xs = np.indices(img.shape)
    total = img.sum()
    return (ys * img).sum() / total, (xs * img).sum() / total


def naive_bbox(img, level=1):
    ys, xs = np.nonzero(img >= level)
    return ys.min(), ys.max(), xs.min(), xs.max()


def page_with_rectangle(h, w, top, left, rh, rw, ink=0, paper=255):
    page = np.full((h, w), paper, np.float64)
    page[top:top + rh, left:left + rw] = ink
    return page


@pytest.mark.parametrize("paper,ink", [(255, 0), (0, 255), (200, 40)])  # dark on light is inverted
@pytest.mark.parametrize("shape", [(300, 200, 20, 30, 120, 40), (64, 640, 10, 500, 30, 90), (28, 28, 3, 3, 10, 10)])
def test_mnist_like_frames_the_digit_as_mnist_does(paper, ink, shape):
    h, w, top, left, rh, rw = shape
    out = mnist_like(page_with_rectangle(h, w, top, left, rh, rw, ink, paper))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and out[0].max() == 0  # white digit, black border
    y0, y1, x0, x1 = naive_bbox(out, 128)
    long_side = max(y1 - y0, x1 - x0) + 1
    assert 19 <= long_side <= 20  # the longer side fills the 20-pixel box
    assert (y1 - y0 + 1) / (x1 - x0 + 1) == pytest.approx(rh / rw, rel=0.35)  # aspect ratio kept
    cy, cx = naive_center_of_mass(out.astype(np.float64))
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5


def test_blank_images_and_non_images_are_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="no digit found"):
        mnist_like(np.full((50, 50), 255.0))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_transparent_png_is_read_as_ink_on_white(tmp_path):
    rgba = np.zeros((100, 60, 4), np.uint8)
    rgba[20:80, 25:35] = (0, 0, 0, 255)  # black stroke, everything else transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    y0, y1, x0, x1 = naive_bbox(out, 128)
    assert y1 - y0 + 1 >= 19 and x1 - x0 + 1 <= 6  # a tall thin stroke, light on dark


runner = CliRunner()


def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


@pytest.fixture(scope="module")
def model(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "model.safetensors"
    result = runner.invoke(app, ["train", "--epochs", "2", "--limit", "6000", "--data-dir", str(data_dir),
                                 "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


def test_predict_samples_json(model):
    result = _predict(model, *SAMPLES, "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["image"] for p in predictions] == [str(s) for s in SAMPLES]
    for p in predictions:
        assert sum(p["probabilities"]) == pytest.approx(1, abs=1e-5)
        probs = [t["probability"] for t in p["top3"]]
        assert probs == sorted(probs, reverse=True) and p["digit"] == p["top3"][0]["digit"]
        assert probs[0] == max(p["probabilities"])


def test_predict_idx_matches_evaluate(model, data_dir):
    """Test images predicted one by one agree with evaluate's confusion matrix on the same images."""
    idx = data_dir / "mnist" / "t10k-images-idx3-ubyte"
    n = 40
    result = _predict(model, idx, *[a for i in range(n) for a in ("--index", i)], "--json")
    assert result.exit_code == 0, result.output
    digits = [p["digit"] for p in json.loads(result.stdout)["predictions"]]
    labels = np.frombuffer((data_dir / "mnist" / "t10k-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)[:n]
    ev = runner.invoke(app, ["evaluate", str(model), "--data-dir", str(data_dir), "--limit", str(n), "--json"])
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels, digits), 1)
    assert confusion.tolist() == json.loads(ev.stdout)["confusion_matrix"]


def test_predict_human_output(model):
    result = _predict(model, SAMPLES[0])
    assert result.exit_code == 0, result.output
    assert "Predictions" in result.stdout and "%" in result.stdout


@pytest.mark.parametrize("make,args,words", [
    (lambda d: (d / "x.png").write_text("hello"), ["x.png"], "not an image"),
    (lambda d: None, ["missing.png"], "does not exist"),
    (lambda d: Image.new("L", (40, 40), 255).save(d / "blank.png"), ["blank.png"], "no digit found"),
    (lambda d: None, ["IDX", "--index", "10000"], "out of range"),
])
def test_predict_errors(model, data_dir, tmp_path, make, args, words):
    make(tmp_path)
    idx = data_dir / "mnist" / "t10k-images-idx3-ubyte"
    args = [str(idx) if a == "IDX" else (a if a.startswith("-") or a.isdigit() else str(tmp_path / a)) for a in args]
    result = _predict(model, *args)
    assert result.exit_code == 3, result.output
    assert words in result.stderr and "\n" not in result.stderr.strip()


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    page = np.full((100, 60), 50000, np.uint16)
    page[20:80, 25:35] = 20000  # both above 255: clipped to 8 bits they would be one grey
    Image.fromarray(page).save(tmp_path / "deep.png")
    eight = np.uint8(np.round(page / 257.0))
    Image.fromarray(eight).save(tmp_path / "eight.png")
    out = load_image(tmp_path / "deep.png")
    assert out.max() == 255
    assert np.abs(out.astype(int) - load_image(tmp_path / "eight.png")).max() <= 2


def test_vector_formats_are_not_read(tmp_path):
    """EPS would be handed to Ghostscript, an interpreter, where it is installed."""
    Image.new("L", (40, 40), 255).save(tmp_path / "d.eps")
    with pytest.raises(ImageError, match=r"not an image this tool can read \(PNG, JPEG, GIF"):
        load_image(tmp_path / "d.eps")


@pytest.mark.parametrize("content", [b"\x00", b"\x00\x00", b"\x00\x00\x08", b"\x1f\x8b", b"\x1f\x8b\x08\x00"])
def test_files_of_a_few_bytes_are_clear_errors(tmp_path, content):
    (tmp_path / "tiny").write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_inputs([tmp_path / "tiny"])
    assert "\n" not in str(info.value) and str(tmp_path / "tiny") in str(info.value)
