"""Robust image decoding: any file PIL can read becomes ``HxWx3`` uint8 RGB, or a clear error.

Every stage and the HTTP service decode images here, so these decisions hold project-wide:

* **Orientation.** The EXIF orientation tag (values 1-8, the table of
  :func:`PIL.ImageOps.exif_transpose`) is applied, so ``(height, width)``, boxes and masks are
  those of the image as displayed. Orientation 5-8 swaps height and width. A missing or
  unreadable tag counts as 1 (the pixels are still fine).
* **Transparency** (RGBA, LA, PA, RGBa/La, P or L/RGB with a transparency key) is composited
  over **white**: ``out = (c * a + 255 * (255 - a)) / 255``, rounded. A fully transparent pixel is
  white, never the arbitrary colour hidden under alpha 0.
* **Grayscale** ``L`` and bilevel ``1`` are replicated to 3 channels (``1`` as 0/255).
* **CMYK, YCbCr, LAB, ...** go through PIL's ``convert("RGB")`` (no ICC colour management).
* **High bit depth** is scaled to uint8, never clipped:
  ``I;16``/``I;16B``/``I;16L``/``I;16N`` by bit depth, ``round(v * 255 / 65535)``, so a 16-bit PNG
  spanning 0..65535 maps to 0..255 monotonically; 32-bit integer ``I`` the same when all values
  lie in ``[0, 65535]``, else min-max over its actual range; 32-bit float ``F`` as ``v * 255``
  when all finite values lie in ``[0, 1]``, else min-max over the finite range (NaN/inf -> 0).
  A constant image outside those ranges maps to 0.
* **Multi-frame** files (GIF, TIFF, APNG, MPO) give their first frame.
* **Refused formats**: EPS (PIL would run Ghostscript on the file).
* **Pixel limit.** ``max_pixels`` is checked on the header's size *before* any pixel is decoded,
  per call. Files are identified with PIL's registered plugins directly (``Image.OPEN``, as
  ``Image.open`` does), so PIL's process-wide decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``)
  is neither consulted at open nor changed. PIL still applies that global guard inside some
  frame code (a GIF frame reaching past the GIF's declared screen, TIFF tiles, MPO frames):
  above it PIL may emit a ``DecompressionBombWarning`` (this module cannot silence it without
  changing process-wide warning filters, which is not thread-safe), and above twice it a
  ``DecompressionBombError`` becomes an :class:`ImageDecodeError`.
* **Truncated files.** ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched (PIL's default,
  ``False``), so a truncated file raises instead of being silently padded with grey.
* **Probe cost.** :func:`probe_image` does a full decode by default (``verify=True``), because
  truncation and corrupt data only show when the pixel data is read; for JPEG it decodes at
  1/8 scale through ``draft``, which still reads the whole entropy-coded stream (so it still
  catches truncation) at a fraction of the cost. ``verify=False`` reads the header only (size,
  EXIF; for PNG only an ``eXIf`` chunk before the pixel data): microseconds, but a file cut off
  after its header passes.

**Locations.** :func:`load_image` and :func:`probe_image` take a local path or a URI
(``file://``, ``s3://``, read through :mod:`weaksam.storage`): a remote file is read whole into
memory and decoded from there, so its pixels are exactly those of the same file on disk.

Every failure raises :class:`ImageDecodeError` whose message is a short reason fit for an
``error`` column: ``"file not found"``, ``"empty file"``, ``"not a file (is a directory)"``,
``"not an image (cannot identify)"``, ``"truncated image file"``,
``"image is 30000x30000 = 900000000 px, over the limit of 64000000"``,
``"corrupt PNG header (zero size or unknown mode)"``, ``"unsupported image format (EPS)"``,
``"corrupt image data: <detail>"``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import struct
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile

from weaksam import storage

DEFAULT_MAX_PIXELS = 64_000_000
_ORIENTATION_TAG = 0x0112
# PIL decodes EPS by running Ghostscript on the file: not for untrusted uploads.
_REFUSED_FORMATS = frozenset({"EPS"})

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "decode_image_bytes",
    "load_image",
    "probe_image",
]


class ImageDecodeError(ValueError):
    """An image that cannot be decoded; ``str(err)`` (and ``err.reason``) is a short reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- public API


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode the image file at ``path`` to ``HxWx3`` uint8 RGB (EXIF orientation applied).

    Raises :class:`ImageDecodeError` with a short reason on any failure.
    """
    with ExitStack() as stack:
        fp = _open_file(path, stack)
        return _decode(fp, _pil_filename(path), max_pixels)


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode an encoded image held in memory (an upload) to ``HxWx3`` uint8 RGB.

    Same conventions and errors as :func:`load_image`.
    """
    if not data:
        raise ImageDecodeError("empty file")
    return _decode(io.BytesIO(data), "", max_pixels)


def probe_image(
    path: str, max_pixels: int = DEFAULT_MAX_PIXELS, *, verify: bool = True
) -> tuple[int, int]:
    """``(height, width)`` of the image at ``path`` as displayed (after EXIF orientation).

    Args:
        path: image file (a local path or a URI; a remote file is read whole).
        max_pixels: larger images raise :class:`ImageDecodeError` (checked from the header).
        verify: decode the pixel data too (JPEG at 1/8 scale), so truncated or corrupt files
            raise here as they would in :func:`load_image`. ``False`` reads the header only.
    """
    with ExitStack() as stack:
        fp = _open_file(path, stack)
        im = _identify(fp, _pil_filename(path), max_pixels)
        stack.callback(im.close)
        w, h = im.size  # before ``draft``, which shrinks the reported size
        try:
            if verify:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
                im.load()
            orientation = _orientation(im, header_only=not verify)
        except Exception as exc:  # PIL raises many types for bad data
            raise _as_decode_error(exc) from exc
    return (w, h) if orientation >= 5 else (h, w)


# --------------------------------------------------------------------------- internals


def _pil_filename(path: str) -> str:
    """The name PIL is given with the open file: the local path, ``""`` for remote files."""
    if storage.is_remote(path):
        return ""
    return storage.resolve(path)[1] if storage.is_uri(path) else path


def _open_file(path: str, stack: ExitStack) -> IO[bytes]:
    if storage.is_remote(path):
        return _read_remote(path)
    if storage.is_uri(path):  # file://
        path = storage.resolve(path)[1]
    try:
        fp = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by the ExitStack
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError("not a file (is a directory)") from None
    except PermissionError:
        raise ImageDecodeError("cannot read file: permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        empty = os.fstat(fp.fileno()).st_size == 0
    except OSError:
        empty = False
    if empty:
        raise ImageDecodeError("empty file")
    return fp


def _read_remote(loc: str) -> IO[bytes]:
    """The bytes of an object-store file in memory, with the same error reasons as a local
    file."""
    try:
        data = storage.read_bytes(loc)
    except FileNotFoundError:
        is_dir = False
        with contextlib.suppress(Exception):
            is_dir = storage.is_dir(loc)
        raise ImageDecodeError(
            "not a file (is a directory)" if is_dir else "file not found"
        ) from None
    except PermissionError:
        raise ImageDecodeError("cannot read file: permission denied") from None
    except (OSError, ValueError) as exc:  # pyarrow: network, credentials, bad bucket name
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageDecodeError(f"cannot read file: {text[:200]}") from None
    if not data:
        raise ImageDecodeError("empty file")
    return io.BytesIO(data)


def _identify(fp: IO[bytes], filename: str, max_pixels: int) -> ImageFile.ImageFile:
    """``Image.open`` without PIL's global bomb check, then our per-call size checks."""
    Image.init()  # register every plugin (cheap after the first call)
    prefix = fp.read(16)
    if not prefix:
        raise ImageDecodeError("empty file")
    im: ImageFile.ImageFile | None = None
    header_error: str | None = None
    try:
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            ok = accept(prefix) if accept is not None else True
            if isinstance(ok, str) or not ok:
                continue
            if fmt in _REFUSED_FORMATS:
                raise ImageDecodeError(f"unsupported image format ({fmt})")
            fp.seek(0)
            try:
                im = factory(fp, filename)
            except (SyntaxError, IndexError, TypeError, struct.error, EOFError) as exc:
                # The format's magic bytes matched but its header is broken: remember why.
                # (Plugins without a magic-byte check try every file; their failures say nothing.)
                if accept is not None and header_error is None:
                    header_error = _header_reason(fmt, exc)
                continue
            break
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise _as_decode_error(exc) from exc
    if im is None:
        raise ImageDecodeError(header_error or "not an image (cannot identify)")
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageDecodeError(f"zero-sized image ({w}x{h})")
    if w * h > max_pixels:
        im.close()
        raise ImageDecodeError(f"image is {w}x{h} = {w * h} px, over the limit of {max_pixels}")
    return im


def _header_reason(fmt: str, exc: BaseException) -> str:
    causes = (exc, exc.__cause__, exc.__context__)  # ImageFile wraps these in SyntaxError
    if any(isinstance(e, struct.error | EOFError) for e in causes):
        return "truncated image file"
    text = str(exc)
    if text == "not identified by this driver":  # ImageFile's check for size <= 0 or no mode
        return f"corrupt {fmt} header (zero size or unknown mode)"
    return f"corrupt {fmt} header: {text[:200] or type(exc).__name__}"


def _orientation(im: Image.Image, header_only: bool = False) -> int:
    """EXIF (or XMP) orientation 1-8; 1 when absent or unreadable.

    ``header_only`` avoids PNG's ``getexif``, which decodes the image to look for an ``eXIf``
    chunk after the pixel data; only metadata before the pixels is seen then.
    """
    try:
        png_header = header_only and im.format == "PNG"
        exif = Image.Image.getexif(im) if png_header else im.getexif()
        value = int(exif.get(_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block must not lose an otherwise good image
        return 1
    return value if 1 <= value <= 8 else 1


# Orientation -> numpy op on an HxW[xC] array; the same table as PIL.ImageOps.exif_transpose.
_ORIENT_OPS: dict[int, Callable[[npt.NDArray[Any]], npt.NDArray[Any]]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: np.swapaxes(a, 0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, k=-1),  # ROTATE_270 (90 degrees clockwise)
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # TRANSVERSE
    8: lambda a: np.rot90(a, k=1),  # ROTATE_90 (90 degrees counter-clockwise)
}


def _decode(fp: IO[bytes], filename: str, max_pixels: int) -> npt.NDArray[np.uint8]:
    im = _identify(fp, filename, max_pixels)
    try:
        im.load()
        orientation = _orientation(im)
        rgb = _to_rgb(im)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise _as_decode_error(exc) from exc
    finally:
        im.close()
    return np.ascontiguousarray(_ORIENT_OPS[orientation](rgb))


def _to_rgb(im: Image.Image) -> npt.NDArray[np.uint8]:
    """Any PIL mode to ``HxWx3`` uint8 (see the module docstring for each mode's rule)."""
    mode = im.mode
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(im), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        return _over_white(np.asarray(im.convert("RGBA")))
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _over_white(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    alpha = rgba[:, :, 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    a = alpha.astype(np.uint32)
    out = (rgba[:, :, :3].astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _scale_to_uint8(arr: npt.NDArray[Any], mode: str) -> npt.NDArray[np.uint8]:
    if mode == "F":
        values = arr.astype(np.float64)
        finite = np.isfinite(values)
        values = np.where(finite, values, 0.0)
        lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(values * 255.0).astype(np.uint8)
        return _minmax(values, lo, hi)
    values = arr.astype(np.int64)
    lo, hi = int(values.min()), int(values.max())
    if mode.startswith("I;16") or (lo >= 0 and hi <= 65535):
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    return _minmax(values.astype(np.float64), float(lo), float(hi))


def _minmax(values: npt.NDArray[np.float64], lo: float, hi: float) -> npt.NDArray[np.uint8]:
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((np.clip(values, lo, hi) - lo) * 255.0 / (hi - lo)).astype(np.uint8)


def _as_decode_error(exc: BaseException) -> ImageDecodeError:
    """Map PIL's many failure types to one short reason."""
    if isinstance(exc, ImageDecodeError):
        return exc
    if isinstance(exc, Image.DecompressionBombError):
        m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
        detail = f"image is {m[1]} px, over the limit of {m[2]}" if m else str(exc)
        return ImageDecodeError(f"{detail} (PIL's decompression-bomb guard)")
    if isinstance(exc, MemoryError):
        return ImageDecodeError("out of memory while decoding")
    text = str(exc)
    low = text.lower()
    if isinstance(exc, EOFError) or "truncated" in low or "premature end" in low:
        return ImageDecodeError("truncated image file")
    if isinstance(exc, OSError) and exc.errno not in (None, 0) and exc.errno != errno.EINVAL:
        return ImageDecodeError(f"cannot read file: {exc.strerror or text}")
    if isinstance(exc, zlib.error):
        return ImageDecodeError(f"corrupt image data: {text}")
    detail = text.splitlines()[0] if text else type(exc).__name__
    return ImageDecodeError(f"corrupt image data: {detail[:200]}")
