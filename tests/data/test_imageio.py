"""weaksam.data.imageio: every odd image either decodes to HxWx3 uint8 RGB or raises a reason."""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from weaksam.data.imageio import ImageDecodeError, decode_image_bytes, load_image, probe_image

Loader = Callable[[Path, int], np.ndarray]


def _from_path(path: Path, max_pixels: int = 64_000_000) -> np.ndarray:
    return load_image(str(path), max_pixels)


def _from_bytes(path: Path, max_pixels: int = 64_000_000) -> np.ndarray:
    return decode_image_bytes(path.read_bytes(), max_pixels)


both_loaders = pytest.mark.parametrize("load", [_from_path, _from_bytes], ids=["path", "bytes"])


def _pattern(h: int = 24, w: int = 40) -> np.ndarray:
    """An asymmetric RGB pattern so every flip/rotation is distinguishable."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 10, (x + 2 * y) % 256], axis=2).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width x height`` RGB, with a tiny (wrong) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b""))
    return path


def _noise_file(tmp_path: Path, fmt: str, suffix: str) -> Path:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"noise{suffix}"
    Image.fromarray(arr).save(path, fmt)
    return path


# --------------------------------------------------------------------------- good images


@both_loaders
def test_rgb_roundtrip(tmp_path: Path, load: Loader) -> None:
    arr = _pattern()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load(tmp_path / "a.png", 64_000_000)
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)


@both_loaders
def test_exif_orientation_6_swaps_height_and_width(tmp_path: Path, load: Loader) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(_pattern(24, 40)).save(path, quality=95, exif=exif)
    assert load(path, 64_000_000).shape == (40, 24, 3)
    assert probe_image(str(path)) == (40, 24)
    assert probe_image(str(path), verify=False) == (40, 24)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pil_exif_transpose(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(_pattern(6, 10)).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = load_image(str(path))
    np.testing.assert_array_equal(out, expected)
    assert probe_image(str(path)) == out.shape[:2]
    assert probe_image(str(path), verify=False) == out.shape[:2]


@both_loaders
@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_is_replicated(tmp_path: Path, load: Loader, mode: str) -> None:
    gray = np.full((8, 9), 77, dtype=np.uint8)
    gray[0, 0] = 255
    path = tmp_path / f"g{mode}.png"
    Image.fromarray(gray).convert(mode).save(path)
    out = load(path, 64_000_000)
    assert out.shape == (8, 9, 3)
    assert (out[0, 0] == 255).all()
    expected = 77 if mode == "L" else 0  # bilevel: threshold/dither to black
    assert np.all(out[1:, 1:] == out[1:, 1:, :1])  # channels equal
    if mode == "L":
        assert (out[4, 4] == expected).all()


@both_loaders
def test_rgba_is_composited_over_white(tmp_path: Path, load: Loader) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 128)  # half-transparent red
    rgba[0, 1] = (10, 20, 30, 255)  # opaque
    rgba[0, 2] = (0, 200, 0, 0)  # fully transparent: hidden colour must not show
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load(tmp_path / "a.png", 64_000_000)
    assert tuple(out[0, 0]) == (255, 127, 127)
    assert tuple(out[0, 1]) == (10, 20, 30)
    assert tuple(out[0, 2]) == (255, 255, 255)


def test_la_is_composited_over_white(tmp_path: Path) -> None:
    la = np.zeros((2, 2, 2), dtype=np.uint8)
    la[0, 0] = (100, 255)
    la[0, 1] = (0, 0)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_image(str(tmp_path / "la.png"))
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[0, 1]) == (255, 255, 255)


@both_loaders
def test_palette_with_transparency(tmp_path: Path, load: Loader) -> None:
    im = Image.new("P", (4, 3), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 1), 1)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    out = load(tmp_path / "p.png", 64_000_000)
    assert tuple(out[0, 0]) == (255, 255, 255)  # transparent index -> white
    assert tuple(out[1, 1]) == (255, 0, 0)


def test_palette_without_transparency(tmp_path: Path) -> None:
    im = Image.fromarray(_pattern()).convert("P")
    im.save(tmp_path / "p.gif")
    out = load_image(str(tmp_path / "p.gif"))
    assert out.shape == (24, 40, 3)


@both_loaders
def test_16bit_png_is_scaled_not_saturated(tmp_path: Path, load: Loader) -> None:
    ramp = np.linspace(0, 65535, 64 * 4).astype(np.uint16).reshape(4, 64)
    Image.fromarray(ramp).save(tmp_path / "d.png")
    out = load(tmp_path / "d.png", 64_000_000)[..., 0]
    flat = out.reshape(-1)
    assert flat[0] == 0 and flat[-1] == 255
    assert np.all(np.diff(flat.astype(int)) >= 0)  # monotonic
    assert len(np.unique(flat)) > 200  # not a saturated white image
    np.testing.assert_allclose(flat, ramp.reshape(-1) / 257.0, atol=0.51)


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16B", [0, 257, 65535], [0, 1, 255]),
        ("I", [0, 32896, 65535], [0, 128, 255]),  # within 16 bits: bit-depth scaling
        ("I", [-100, 0, 100], [0, 128, 255]),  # outside: actual range
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # within [0, 1]: x 255
        ("F", [-2.0, 0.0, 2.0], [0, 128, 255]),  # outside: actual range
        ("F", [float("nan"), 0.0, 1.0], [0, 0, 255]),
    ],
)
def test_high_bit_depth_modes(
    tmp_path: Path, mode: str, values: list[float], expected: list[int]
) -> None:
    if mode == "I;16B":
        im = Image.frombytes(mode, (3, 1), struct.pack(">3H", *values))
    else:
        dtype = np.float32 if mode == "F" else np.int32
        im = Image.fromarray(np.array([values], dtype=dtype), mode)
    path = tmp_path / "hi.tif"
    im.save(path)
    with Image.open(path) as check:
        assert check.mode == mode
    out = load_image(str(path))
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == expected


@both_loaders
def test_cmyk_jpeg(tmp_path: Path, load: Loader) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = load(tmp_path / "c.jpg", 64_000_000)
    assert out.shape == (16, 16, 3)
    r, g, b = (int(v) for v in out[8, 8])
    assert r > 230 and g < 25 and b < 25  # red


@both_loaders
def test_multiframe_gif_takes_first_frame(tmp_path: Path, load: Loader) -> None:
    frames = [Image.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(tmp_path / "anim.gif") as im:
        assert getattr(im, "n_frames", 1) == 2
    out = load(tmp_path / "anim.gif", 64_000_000)
    assert out.shape == (6, 8, 3)
    assert tuple(out[3, 3]) == (255, 0, 0)


# --------------------------------------------------------------------------- bad images


@both_loaders
@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file(tmp_path: Path, load: Loader, fmt: str, suffix: str) -> None:
    path = _noise_file(tmp_path, fmt, suffix)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"^truncated image file$"):
        load(path, 64_000_000)
    with pytest.raises(ImageDecodeError, match=r"^truncated image file$"):
        probe_image(str(path))
    assert probe_image(str(path), verify=False) == (64, 64)  # header-only: documented trade-off


@both_loaders
def test_random_bytes(tmp_path: Path, load: Loader) -> None:
    path = tmp_path / "junk.jpg"
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(ImageDecodeError, match=r"^not an image \(cannot identify\)$"):
        load(path, 64_000_000)


def test_empty_missing_and_directory(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"^empty file$"):
        load_image(str(tmp_path / "empty.png"))
    with pytest.raises(ImageDecodeError, match=r"^empty file$"):
        decode_image_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"^file not found$"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageDecodeError, match=r"^file not found$"):
        probe_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(str(tmp_path))


@both_loaders
def test_huge_header_rejected_before_decoding(tmp_path: Path, load: Loader) -> None:
    path = _png_header_only(tmp_path / "huge.png", 50000, 50000)
    msg = r"^image is 50000x50000 = 2500000000 px, over the limit of 64000000$"
    with pytest.raises(ImageDecodeError, match=msg):
        load(path, 64_000_000)
    with pytest.raises(ImageDecodeError, match=msg):
        probe_image(str(path), verify=False)


def test_small_limit_on_normal_image(tmp_path: Path) -> None:
    Image.fromarray(_pattern(24, 40)).save(tmp_path / "a.png")
    with pytest.raises(ImageDecodeError, match=r"^image is 40x24 = 960 px, over the limit of 959$"):
        load_image(str(tmp_path / "a.png"), max_pixels=959)
    assert load_image(str(tmp_path / "a.png"), max_pixels=960).shape == (24, 40, 3)


def test_limit_is_per_call_and_pil_global_state_untouched(tmp_path: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    # Over PIL's own process-wide warning (~89 M) and error (~179 M) thresholds.
    warn = _png_header_only(tmp_path / "warn.png", 10000, 10000)
    err = _png_header_only(tmp_path / "err.png", 20000, 20000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        assert probe_image(str(warn), 10**9, verify=False) == (10000, 10000)
        assert probe_image(str(err), 10**9, verify=False) == (20000, 20000)
        with pytest.raises(ImageDecodeError, match="over the limit"):
            probe_image(str(err), verify=False)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_gif_frame_past_its_screen_is_refused(tmp_path: Path) -> None:
    # A 5x5 GIF whose first frame claims 20000x20000: PIL grows the image while parsing.
    head = b"GIF89a" + struct.pack("<HHBBB", 5, 5, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 20000, 20000, 0) + b"\x02\x02\x44\x01\x00;"
    msg = r"^image is 400000000 px, over the limit of \d+ \(PIL's decompression-bomb guard\)$"
    with pytest.raises(ImageDecodeError, match=msg):
        decode_image_bytes(head + frame)


def test_zero_sized_image(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "zero.png", 0, 10)
    with pytest.raises(ImageDecodeError, match="zero size"):
        load_image(str(path))
    with pytest.raises(ImageDecodeError, match="zero size"):
        probe_image(str(path), verify=False)


def test_header_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(ImageDecodeError, match=r"^truncated image file$"):
        load_image(str(path))


def test_eps_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.eps")
    with pytest.raises(ImageDecodeError, match=r"^unsupported image format \(EPS\)$"):
        load_image(str(tmp_path / "x.eps"))


def test_error_is_value_error_with_reason() -> None:
    err = ImageDecodeError("file not found")
    assert isinstance(err, ValueError) and err.reason == str(err) == "file not found"
