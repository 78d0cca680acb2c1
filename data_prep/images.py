"""Decode any image a dataset row may hold into a plain 8-bit RGB PIL image, or say why not.

Real data (Reddit photos, scraped edits) holds CMYK JPEGs, RGBA/palette PNGs with transparency,
16-bit grayscale TIFFs, EXIF-rotated phone photos, truncated files and decompression bombs.
Fixable ones are normalised (and the fix is named, for the report); the rest raise `BadImage`
with a short reason code.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: Largest accepted image (pixels) before decoding; Pillow's own bomb limit is ~89M.
DEFAULT_MAX_PIXELS = 40_000_000


class BadImage(ValueError):
    """An image that cannot be used; `reason` is a short code counted in the report."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _open(source: Any, base_dir: Path | None) -> tuple[Image.Image, str]:
    """Open (lazily) from bytes, a path, an HF image struct {bytes, path} or a PIL image."""
    if isinstance(source, Image.Image):
        return source, "<PIL image>"
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        if data:
            return _open(bytes(data), base_dir)
        if path:
            return _open(path, base_dir)
        raise BadImage("missing_image", "image struct holds neither bytes nor a path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise BadImage("missing_image", "empty image bytes")
        try:
            return Image.open(io.BytesIO(bytes(source))), "<bytes>"
        except Image.DecompressionBombError as exc:
            raise BadImage("decompression_bomb", str(exc)) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadImage("corrupt_image", f"cannot identify image bytes ({exc})") from None
    if isinstance(source, (str, os.PathLike)):
        if not str(source).strip():
            raise BadImage("missing_image", "empty image path")
        path = Path(source)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise BadImage("missing_file", f"no such image file {path}")
        try:
            return Image.open(path), str(path)
        except Image.DecompressionBombError as exc:
            raise BadImage("decompression_bomb", f"{path}: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadImage("corrupt_image", f"{path}: {exc}") from None
    if source is None:
        raise BadImage("missing_image", "no image in the row")
    raise BadImage("missing_image", f"unsupported image value of type {type(source).__name__}")


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        if mode == "I" and array.max() <= 255:
            top = 255.0
        gray = np.clip(array.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append(f"converted_from_{mode.replace(';', '')}")
        return Image.fromarray(gray, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    notes.append(f"converted_from_{mode}")
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: Any,
    base_dir: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
) -> tuple[Image.Image, list[str]]:
    """Decode to a fully loaded 8-bit RGB image, EXIF orientation applied.

    Returns (image, notes) where notes name each normalisation done (for the report).
    Raises BadImage(reason) for missing files, undecodable or truncated data and images over
    `max_pixels` (checked from the header, before any pixel is decoded).
    """
    notes: list[str] = []
    image, where = _open(source, Path(base_dir) if base_dir is not None else None)
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage("decompression_bomb", f"{where}: {width}x{height} exceeds {max_pixels} pixels")
        if width == 0 or height == 0:
            raise BadImage("corrupt_image", f"{where}: empty image {width}x{height}")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise BadImage("decompression_bomb", f"{where}: {exc}") from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise BadImage("corrupt_image", f"{where}: {exc}") from None
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
            notes.append("exif_rotated")
        image = _to_rgb(image, notes)
        if max_side is not None and max(image.size) > max_side:
            image = image.copy()
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            notes.append("downscaled")
        return image, notes
    except BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad row, never a crash
        raise BadImage("corrupt_image", f"{where}: {type(exc).__name__}: {exc}") from None
