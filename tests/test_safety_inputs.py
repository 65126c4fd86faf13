"""Every input is bounded in size and time, and bad input is one line with its exit code (issue 13).

Through the real CLI in a subprocess (so that a regression fails by its timeout instead of hanging
the suite), against real misbehaving mirrors on 127.0.0.1, real FIFOs, pipes made by bash, and
real bombs made here. Where the promise is about memory, the child's peak is measured.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_server import drip, drip_headers, endless, needs_password, serve_behaviour, serve_folder

from rmsprop_cli import parts
from rmsprop_cli.cli import app
from rmsprop_cli.images import load_image

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, bash and umask are POSIX")

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
MIB = 2**20
# Fast limits for the tests; the defaults a user gets are 10,000 bytes/s over 30 s and 30 s for a pipe.
FAST = {"RMSPROP_DOWNLOAD_WINDOW": "1", "RMSPROP_DOWNLOAD_MIN_SPEED": "1000", "RMSPROP_PIPE_TIMEOUT": "1"}


def cli(*args, timeout: float = 30, env: dict | None = None, measure: bool = False):
    """Run `python -m rmsprop_cli ARGS` in a child; with ``measure``, also its peak memory in MiB
    (from RUSAGE_CHILDREN of a wrapper whose only child it is)."""
    full_env = {**os.environ, "COLUMNS": "200", **FAST, **(env or {})}
    command = [sys.executable, "-m", "rmsprop_cli", *map(str, args)]
    if measure:
        wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                   "sys.stderr.write('\\nPEAK %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                   "sys.exit(r.returncode)")
        command = [sys.executable, "-c", wrapper, *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)
    if measure:
        result.stderr, _, peak = result.stderr.rpartition("\nPEAK ")
        result.peak_mib = int(peak) / 1024  # ru_maxrss is in KiB on Linux
    return result


def bash(script: str, timeout: float = 30, env: dict | None = None):
    full_env = {**os.environ, "COLUMNS": "200", **FAST, **(env or {}), "PY": sys.executable}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout, env=full_env)


def one_line_error(result, code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    assert "Traceback" not in result.stderr + result.stdout
    for w in words:
        assert w in message, message
    return message


@pytest.fixture(scope="module")
def model(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "model.safetensors"
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--limit", "600", "--hidden", "16",
                                      "--data-dir", str(data_dir), "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def mirror_copy(mnist_dir, tmp_path) -> Path:
    """A local mirror folder of links to the four MNIST files, to spoil one at a time."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for f in mnist_dir.iterdir():
        (folder / f.name).symlink_to(f)
    return folder


# --- 11: a mirror that is too slow is abandoned, the next one is tried --------------------------


def test_mirror_dripping_a_byte_at_a_time_is_abandoned_for_the_next(mnist_dir, tmp_path):
    with serve_behaviour({}, default=drip(0.2)) as url:  # alone, 9.9 MB at 5 bytes/s: 3 weeks
        start = time.monotonic()
        result = cli("download", "--data-dir", tmp_path, "--mirror", url, "--mirror", mnist_dir, timeout=40)
        took = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "too slow" in line]
    assert len(notes) == 1 and url in notes[0] and "trying the next mirror" in notes[0], result.stderr
    assert took < 15
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


def test_mirror_dripping_its_headers_is_abandoned(tmp_path):
    """The socket timeout is per read: headers sent a byte every 0.2 s never trip it."""
    with serve_behaviour({}, default=drip_headers(0.2)) as url:
        start = time.monotonic()
        result = cli("download", "--data-dir", tmp_path, "--mirror", url, timeout=40)
        took = time.monotonic() - start
    one_line_error(result, 3, url, "too slow", "bytes/s")
    assert took < 15
    assert list((tmp_path / "mnist").iterdir()) == []


def test_speed_settings_are_checked(tmp_path):
    result = cli("download", "--data-dir", tmp_path, "--mirror", tmp_path, env={"RMSPROP_DOWNLOAD_WINDOW": "soon"})
    one_line_error(result, 2, "RMSPROP_DOWNLOAD_WINDOW")


# --- 13: downloads are streamed and capped; decompression is bounded -------------------------------


def test_endless_stream_stops_at_the_size_the_file_can_have(tmp_path):
    # No .gz here (404), then the uncompressed name streams zeros without end (256 MiB at most).
    routes = {"train-images-idx3-ubyte": endless(limit=256 * MIB)}
    with serve_behaviour(routes) as url:
        result = cli("download", "--data-dir", tmp_path, "--mirror", url, measure=True)
    one_line_error(result, 3, "larger than the published file (47,040,016 bytes)")
    assert result.peak_mib < 150, result.peak_mib  # streamed to disk, never held: 47 MB of it
    assert list((tmp_path / "mnist").iterdir()) == []


@pytest.mark.parametrize("over", ["http", "folder"])
def test_gzip_bomb_is_decompressed_no_further_than_the_file_can_be(tmp_path, over):
    bomb = tmp_path / "served" / "train-images-idx3-ubyte.gz"
    bomb.parent.mkdir()
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(16 * MIB)
    bomb.write_bytes(b"".join(deflate.compress(zeros) for _ in range(16)) + deflate.flush())  # 256 MiB
    start = time.monotonic()
    if over == "http":
        with serve_folder(bomb.parent) as url:
            result = cli("download", "--data-dir", tmp_path / "d", "--mirror", url, measure=True)
    else:
        result = cli("download", "--data-dir", tmp_path / "d", "--mirror", bomb.parent, measure=True)
    one_line_error(result, 3, "decompresses to more than the 47,040,016 bytes of the published file")
    assert result.peak_mib < 150, result.peak_mib
    assert time.monotonic() - start < 10
    assert list((tmp_path / "d" / "mnist").iterdir()) == []


# --- 22: cached files honour the umask --------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [("022", 0o644), ("027", 0o640)])
def test_cached_files_get_the_permissions_the_umask_gives(mnist_dir, tmp_path, umask, mode):
    result = bash(f'umask {umask} && "$PY" -m rmsprop_cli download --data-dir "{tmp_path}" --mirror "{mnist_dir}"')
    assert result.returncode == 0, result.stderr
    files = list((tmp_path / "mnist").iterdir())
    assert len(files) == 4 and {stat.S_IMODE(f.stat().st_mode) for f in files} == {mode}


def test_cache_entries_are_read_only_when_they_can_be_the_file(mnist_dir, tmp_path):
    cached = tmp_path / "mnist" / "train-images-idx3-ubyte"
    cached.parent.mkdir()
    os.mkfifo(cached)
    result = cli("download", "--data-dir", tmp_path, "--mirror", mnist_dir, timeout=20)
    one_line_error(result, 3, f"the cached {cached} is a named pipe (FIFO), not a file", "--data-dir")
    cached.unlink()
    with open(cached, "wb") as f:
        f.truncate(2**30)  # a sparse GiB: no disk, but reading it would take a GiB of memory
    result = cli("download", "--data-dir", tmp_path, "--mirror", mnist_dir, measure=True)
    assert result.returncode == 0, result.stderr
    assert cached.stat().st_size == 47_040_016 and result.peak_mib < 200, result.peak_mib


def test_a_killed_downloads_temporary_file_is_removed_by_the_next_run(mnist_dir, tmp_path):
    folder = tmp_path / "mnist"
    with serve_behaviour({}, default=drip(0.1)) as url:
        child = subprocess.Popen([sys.executable, "-m", "rmsprop_cli", "download", "--data-dir", tmp_path,
                                  "--mirror", url], env={**os.environ, "RMSPROP_DOWNLOAD_MIN_SPEED": "0"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not list(folder.glob(".*.part")) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
    left = list(folder.glob(".*.part"))
    assert len(left) == 1, left
    host = parts._WRITER.rpartition("-")[0]  # this machine, as the names of temporary files spell it
    alive = folder / f".t10k-labels-idx1-ubyte.{host}-{os.getpid()}-0123abcd.part"  # this test is alive
    elsewhere = folder / ".t10k-labels-idx1-ubyte.otherhost-1-0123abcd.part"
    mine = folder / ".notes.part"
    for p in (alive, elsewhere, mine):
        p.write_bytes(b"x")
    result = cli("download", "--data-dir", tmp_path, "--mirror", mnist_dir)
    assert result.returncode == 0, result.stderr
    assert not left[0].exists() and alive.exists() and elsewhere.exists() and mine.exists()


# --- 24: credentials in a mirror URL work and are never shown -------------------------------------------


def test_mirror_url_with_credentials_authenticates_and_never_shows_them(mnist_dir, tmp_path):
    with serve_behaviour({}, default=needs_password("ann-xq", "p@ss:w/rd", mnist_dir)) as url:
        host = url.removeprefix("http://")
        good = cli("download", "--data-dir", tmp_path / "a", "--mirror", f"http://ann-xq:p%40ss%3Aw%2Frd@{host}")
        bad = cli("download", "--data-dir", tmp_path / "b", "--mirror", f"http://ann-xq:hunter2@{host}")
        none = cli("download", "--data-dir", tmp_path / "c", "--mirror", url)
    assert good.returncode == 0, good.stderr
    assert len(list((tmp_path / "a" / "mnist").iterdir())) == 4
    message = one_line_error(bad, 3, "401", f"http://***@{host}", "refused")
    assert "hunter2" not in bad.stderr + bad.stdout and "ann-xq" not in message
    one_line_error(none, 3, "401", "USER:PASSWORD@")


def test_credentials_are_hidden_in_every_failure(tmp_path):
    result = cli("download", "--data-dir", tmp_path, "--mirror", "http://ann:hunter2@127.0.0.1:1/",
                 "--mirror", "https://tok:abc123@[::1/")
    message = one_line_error(result, 3, "http://***@127.0.0.1:1/", "connection refused")
    assert "hunter2" not in message and "abc123" not in message and "tok" not in message


@pytest.mark.parametrize("password", ["top secret", "top/secret", "top#secret", "top?secret", "p@ss word"])
def test_credentials_with_reserved_characters_are_hidden_too(tmp_path, password):
    """A password with a space, '/', '#', '?' or '@' ends the general pattern early; the mirror's own
    credentials are hidden wherever they appear, also through RMSPROP_MIRROR."""
    ways = [(["--mirror", f"http://carol:{password}@127.0.0.1:1/"], {})]
    if " " not in password:  # RMSPROP_MIRROR is split at spaces (the README says to write %20)
        ways.append(([], {"RMSPROP_MIRROR": f"http://carol:{password}@127.0.0.1:1/"}))
    for args, env in ways:
        result = cli("download", "--data-dir", tmp_path, *args, env=env)
        assert result.returncode == 3, result.stderr
        shown = result.stderr + result.stdout
        assert "secret" not in shown and "word" not in shown and "carol" not in shown, shown
        assert "***@" in shown


def test_an_at_sign_in_a_mirror_path_is_not_taken_for_credentials():
    from rmsprop_cli.download import _userinfo

    assert _userinfo("https://example.com/mnist@v1/") is None  # the host stays visible in messages
    assert _userinfo("http://carol:top/secret@127.0.0.1:1/") == "carol:top/secret"
    assert _userinfo("http://token@host/") == "token"
    assert _userinfo("http://host/") is None


def test_a_mirror_that_never_answers_is_left_after_one_timeout(mnist_dir, tmp_path):
    """The socket's timeout fired before the pace watcher and was retried twice: 92 s of silence with
    the default 30 s.  Now one timeout is enough, and a line says the next mirror is tried."""
    import socket
    import threading
    import time

    from rmsprop_cli import data

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # and never answer
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    notes = []

    class Notes:
        def start(self, name, total): ...
        def advance(self, n): ...
        def finish(self): ...
        def note(self, message): notes.append(message)

    try:
        started = time.monotonic()
        data.fetch(["t10k-labels-idx1-ubyte"], tmp_path, [f"http://127.0.0.1:{listener.getsockname()[1]}/",
                                                          str(mnist_dir)], Notes(), timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").exists()
    assert elapsed < 1.5, elapsed  # three tries and their pauses took 3 s
    assert len(notes) == 1 and "too slow: nothing arrived for 0.5 s; trying the next mirror" in notes[0]


def test_an_image_with_pixels_that_are_not_numbers_is_one_line(model, tmp_path):
    from PIL import Image

    pixels = np.asarray(Image.open(SAMPLES / "digit-3.png").convert("L"), np.float32).copy()
    for bad in (np.nan, np.inf):
        pixels[0, 0] = bad
        Image.fromarray(pixels, "F").save(tmp_path / "float.tif")
        one_line_error(cli("predict", model, tmp_path / "float.tif"), 3, "not numbers (NaN or infinity)")


# --- 12: FIFOs and other files that are not regular ----------------------------------------------------


def test_fifo_as_image_checkpoint_or_mirror_file_is_refused_without_blocking(model, mirror_copy, tmp_path):
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    one_line_error(cli("predict", model, fifo, timeout=20), 3, str(fifo), "pipe", "nothing came out")
    for command in (["predict", fifo, SAMPLES / "digit-0.png"], ["evaluate", fifo]):
        one_line_error(cli(*command, timeout=20), 4, f"checkpoint {fifo} is a named pipe (FIFO), not a file")
    (mirror_copy / "train-images-idx3-ubyte.gz").unlink()
    os.mkfifo(mirror_copy / "train-images-idx3-ubyte.gz")
    result = cli("download", "--data-dir", tmp_path / "d", "--mirror", mirror_copy, timeout=20)
    one_line_error(result, 3, "train-images-idx3-ubyte.gz: a named pipe (FIFO), not a file")


def test_a_pipe_that_delivers_nothing_is_given_up_on(model):
    start = time.monotonic()
    script = f'"$PY" -m rmsprop_cli predict "{model}" <(exec sleep 30 2>/dev/null); rc=$?; kill $! 2>/dev/null; exit $rc'
    result = bash(script, timeout=20)
    one_line_error(result, 3, "is a pipe that delivered nothing in 1 s")
    assert time.monotonic() - start < 15


def test_devices_folders_and_symlink_loops_say_what_they_are(model, tmp_path):
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    cases = [("/dev/zero", "is a character device, not a file"), (tmp_path, "is a folder, not a file"),
             (tmp_path / "loop-a", "symbolic link loop"),
             (tmp_path / "dangling.png", f"is a symbolic link to {tmp_path / 'gone.png'}, which does not exist")]
    for path, words in cases:
        one_line_error(cli("predict", model, path, timeout=20), 3, words)
    one_line_error(cli("evaluate", tmp_path / "loop-a", timeout=20), 4, "symbolic link loop")


# --- 18, 17: pipes read once; a single --index ----------------------------------------------------------


def test_images_and_idx_files_through_process_substitution(model, data_dir):
    idx = data_dir / "mnist" / "t10k-images-idx3-ubyte"
    script = (f'"$PY" -m rmsprop_cli predict "{model}" "{SAMPLES / "digit-0.png"}" "{idx}" --index 3 --json && '
              f'"$PY" -m rmsprop_cli predict "{model}" <(cat "{SAMPLES / "digit-0.png"}") '
              f'<(gzip -c "{idx}") --index 3 --json')
    result = bash(script, timeout=60)
    assert result.returncode == 0, result.stderr
    direct, piped = (json.loads(line)["predictions"] for line in result.stdout.splitlines())
    assert [p["image"] for p in direct] == [str(SAMPLES / "digit-0.png"), f"{idx}[3]"]  # one --index works
    assert [p["probabilities"] for p in piped] == [p["probabilities"] for p in direct]
    assert piped[1]["image"].endswith("[3]")


# --- 14, 18: image and IDX bombs ----------------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height and holds no pixels (Pillow refuses those above 179 MP itself)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_huge_images_are_refused_by_their_size_before_decoding(model, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (8000, 8000), 255).save(bomb, compress_level=1)  # 64 MP, a few hundred KB
    assert bomb.stat().st_size < MIB
    result = cli("predict", model, bomb, measure=True)
    one_line_error(result, 3, "8000 x 8000 pixels (64 megapixels)", "up to 50 megapixels")
    assert "DecompressionBomb" not in result.stderr
    assert result.peak_mib < 300, result.peak_mib
    _png_header_only(tmp_path / "huge.png", 20000, 20000)
    one_line_error(cli("predict", model, tmp_path / "huge.png"), 3, "20000 x 20000 pixels (400 megapixels)")


def test_idx_bombs_are_refused_by_their_size(model, tmp_path):
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(16 * MIB)
    (tmp_path / "trailing.gz").write_bytes(
        deflate.compress(header) + b"".join(deflate.compress(zeros) for _ in range(16)) + deflate.flush())
    result = cli("predict", model, tmp_path / "trailing.gz", measure=True)  # 10 images, then 256 MiB
    one_line_error(result, 3, "trailing bytes", "10 x 28 x 28")
    assert result.peak_mib < 150, result.peak_mib
    huge = struct.pack(">BBBBIII", 0, 0, 8, 3, 8_000_000, 28, 28)
    (tmp_path / "huge.gz").write_bytes(zlib.compress(huge + bytes(4096), wbits=31))
    one_line_error(cli("predict", model, tmp_path / "huge.gz"), 3, "8000000 x 28 x 28", "up to 64 MiB")
    (tmp_path / "raw-idx").write_bytes(huge)
    one_line_error(cli("predict", model, tmp_path / "raw-idx"), 3, "8000000 x 28 x 28", "up to 64 MiB")


# --- 19: transparency ------------------------------------------------------------------------------------


def _stroke(alpha_value=255):
    """A digit-like stroke (a '7') in an alpha channel, anti-aliased at its edges."""
    alpha = np.zeros((120, 90), np.float64)
    alpha[20:32, 15:75] = 1
    for y in range(32, 105):
        x = int(75 - (y - 32) * 0.45)
        alpha[y, x - 6:x + 6] = 1
    alpha[:, 1:] = np.maximum(alpha[:, 1:], 0.5 * alpha[:, :-1])  # soft edges
    return np.uint8(np.round(alpha * alpha_value))


def test_ink_on_a_transparent_background_is_read_from_the_alpha_channel(tmp_path):
    alpha = _stroke()
    for colour in [(255, 255, 255), (250, 220, 40), (0, 0, 0), (200, 30, 30)]:  # white ink first
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = alpha
        Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
        # The same drawing, opaque: the ink over the colour that contrasts with it.
        luma = colour @ np.array([0.299, 0.587, 0.114])
        page = 0.0 if luma > 127.5 else 255.0
        flat = luma * alpha / 255 + page * (1 - alpha / 255)
        Image.fromarray(np.uint8(np.round(flat)), "L").save(tmp_path / "flat.png")
        out, expected = load_image(tmp_path / "t.png"), load_image(tmp_path / "flat.png")
        assert out.max() == 255
        assert np.abs(out.astype(int) - expected).max() <= 2, colour

    # Where the border is opaque, the page is: transparent holes (rounded corners) take its colour.
    card = np.full((*alpha.shape, 4), 255, np.uint8)
    card[..., :3] = 255 - alpha[..., None]  # a dark '7' on a white card
    opaque = card.copy()
    card[:8, :8, 3] = card[:8, -8:, 3] = card[-8:, :8, 3] = card[-8:, -8:, 3] = 0
    Image.fromarray(card, "RGBA").save(tmp_path / "card.png")
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(load_image(tmp_path / "card.png"), load_image(tmp_path / "opaque.png"))


def test_white_ink_on_transparency_through_predict(model, tmp_path):
    rgba = np.zeros((*_stroke().shape, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 255, _stroke()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "white.png")
    Image.fromarray(np.zeros(rgba.shape, np.uint8), "RGBA").save(tmp_path / "empty.png")
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "white.png"), "--json"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "empty.png")])
    assert result.exit_code == 3 and "no digit found" in result.stderr
