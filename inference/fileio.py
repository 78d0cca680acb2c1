"""The one image loader, the one atomic write and JSONL read/write, for every package.

data_prep, inference and eval all read images and write outputs through this module, so an image
means the same pixels everywhere (an upright phone photo, transparency on white) and a killed run
never leaves half a file. It imports nothing of this repository (inference is the ground floor).

Images: `load_image` decodes bytes, paths, HF image structs {bytes, path} or PIL images to a fully
loaded 8-bit RGB image with EXIF orientation applied; CMYK, 16-bit/float grey, and alpha (RGBA, LA,
palette with transparency) composited on white are normalised and named in the notes. It raises
`BadImage(reason)` for missing files, undecodable or truncated data, decompression bombs (checked
from the header, before any pixel is decoded) and images the models cannot take (`check_fit`).

Writes: `atomic_path` / `atomic_open` / `write_json` / `write_text` / `write_jsonl` / `save_png`
write a hidden temp file `.<name>.<random>.tmp` in the target folder, then `os.replace`;
`remove_stale_temps` deletes those a killed run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

#: Largest accepted image (pixels) before decoding; Pillow's own bomb limit is ~89M.
DEFAULT_MAX_PIXELS = 40_000_000
#: Qwen2.5-VL's processor (transformers' `qwen2_vl` image processing, `smart_resize`): images are
#: cut into 14 px patches merged 2x2, so a side is a multiple of factor = 28; older releases refuse
#: a side under 28 ("height or width must be larger than factor") and newer ones upsample it into
#: invented patches. Below that an image carries no usable content for the VLM or the editors.
MIN_SIDE = 28
#: `smart_resize` raises "absolute aspect ratio must be smaller than 200" above this ratio.
MAX_ASPECT_RATIO = 200.0
#: Suffix of the temp files the atomic writers make (`.<name>.<random>.tmp`).
TEMP_SUFFIX = ".tmp"


class BadImage(ValueError):
    """An image that cannot be used; `reason` is a short code (counted in data_prep's report, the
    start of the pipeline's per-item error)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# ---------------------------------------------------------------------------------------- images


def image_hash(image: Image.Image) -> str:
    """sha256 of an image's RGB pixels and size (PNG metadata and compression do not matter): the
    image part of every cache key (judge cache, answer journal)."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def check_fit(width: int, height: int, where: str = "image") -> None:
    """Raise BadImage unless the VLM processor and the editors accept a `width` x `height` image."""
    if min(width, height) < MIN_SIDE:
        raise BadImage("image_too_small", f"{where}: {width}x{height}, a side under {MIN_SIDE} px")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise BadImage(
            "aspect_ratio_too_large",
            f"{where}: {width}x{height}, aspect ratio {ratio:.0f} > {MAX_ASPECT_RATIO:.0f}",
        )


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
        if path.stat().st_size == 0:  # the same reason as empty bytes in a parquet or HF row
            raise BadImage("missing_image", f"{path}: empty image file (0 bytes)")
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
        top = 65535.0 if mode.startswith("I;16") else max(float(np.nanmax(array)), 1.0)
        if mode == "I" and array.max() <= 255:
            top = 255.0
        scaled = np.nan_to_num(array.astype(np.float64) / top * 255.0 + 0.5)
        gray = np.clip(scaled, 0, 255).astype(np.uint8)
        notes.append(f"converted_from_{mode.replace(';', '')}")
        return Image.fromarray(gray, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    notes.append(f"converted_from_{mode}")
    if has_alpha:  # composite on white: transparent areas would otherwise turn black
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: Any,
    base_dir: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    check: bool = True,
) -> tuple[Image.Image, list[str]]:
    """Decode to a fully loaded 8-bit RGB image, EXIF orientation applied; text entries of `info`
    (PNG text chunks: synthetic scenes ride there) are kept.

    Returns (image, notes), notes naming each normalisation done. Raises BadImage(reason) for
    missing files, undecodable or truncated data, images over `max_pixels` (checked from the
    header) and, with `check`, images `check_fit` refuses (before decoding and after `max_side`).
    """
    notes: list[str] = []
    image, where = _open(source, Path(base_dir) if base_dir is not None else None)
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage("decompression_bomb", f"{where}: {width}x{height} exceeds {max_pixels} pixels")
        if width == 0 or height == 0:
            raise BadImage("corrupt_image", f"{where}: empty image {width}x{height}")
        if check:
            check_fit(width, height, where)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise BadImage("decompression_bomb", f"{where}: {exc}") from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise BadImage("corrupt_image", f"{where}: {exc}") from None
        info = {k: v for k, v in {**image.info, **getattr(image, "text", {})}.items() if isinstance(v, str)}
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
            notes.append("exif_rotated")
        image = _to_rgb(image, notes)
        if max_side is not None and max(image.size) > max_side:
            image = image.copy()
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            notes.append("downscaled")
            if check:
                check_fit(*image.size, f"{where} downscaled to max side {max_side}")
        if image is source:  # never hand back (and later mutate) the caller's object
            image = image.copy()
        image.info = {k: v for k, v in info.items() if isinstance(k, str)}
        return image, notes
    except BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image, never a crash
        raise BadImage("corrupt_image", f"{where}: {type(exc).__name__}: {exc}") from None


def load_rgb(source: Any, base_dir: str | os.PathLike | None = None, check: bool = True) -> Image.Image:
    """`load_image` without the notes."""
    return load_image(source, base_dir, check=check)[0]


# ---------------------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_near(path: Path) -> Path:
    """An empty temp file `.<name>.<random>.tmp` in `path`'s folder, with ordinary permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    tmp = temp_path_near(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder next to `path`; on success it replaces the folder `path` (a model a
    builder saves piece by piece), on error it is removed. `keep_existing`: a folder another process
    finished at `path` meanwhile wins (a shared cache), ours is dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX))
    try:
        yield tmp
        if path.exists() and not keep_existing:
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (keep_existing and path.is_dir()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """`open` whose result appears at `path` only when the block finishes without error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` atomically."""
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON, atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=True)
        fh.write("\n")
    return Path(path)


def png_bytes(image: Image.Image) -> bytes:
    """Encode as 8-bit RGB PNG (lossless): what the parquet rows and the hosted editors get."""
    buf = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG with `image.info`'s string entries as text chunks, atomically."""
    path = Path(path)
    meta = PngInfo()
    for key, value in image.info.items():
        if isinstance(key, str) and isinstance(value, str):
            meta.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=meta)
    return path


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True, target: str | None = None) -> int:
    """Delete the temp files (`.<name>.*.tmp`) an interrupted run left in `folder` (only those of the
    file named `target` when given); returns the count.

    Call it when a run starts, before anything of this run is being written there."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    name = f".{target}.*{TEMP_SUFFIX}" if target else f".*{TEMP_SUFFIX}"
    pattern = f"**/{name}" if recursive else name
    n = 0
    for stale in folder.glob(pattern):
        if stale.is_dir():  # an atomic_dir a killed run left
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        n += 1
    return n


# ---------------------------------------------------------------------------------------- JSONL


def read_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSONL file, streamed; ValueError names file
    and line of invalid JSON."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def read_jsonl(path: str | os.PathLike) -> Iterator[Any]:
    """The values of a JSONL file, streamed (blank lines skipped); ValueError names file and line."""
    for _, value in read_jsonl_lines(path):
        yield value


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write one JSON value per line, streamed and atomically; returns the number of lines."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
