"""One image loader everywhere: the odd-image zoo gives the same pixels, or the same skip reason, in
data_prep (eval set build) and in the pipeline (per-item trace error); a SIGKILLed data_prep run
leaves no temp file after its rerun."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.build import build_eval_set
from inference.editors import Editor
from inference.fileio import MAX_ASPECT_RATIO, MIN_SIDE, BadImage, check_fit, load_image, remove_stale_temps
from inference.pipeline import EditingPipeline, read_traces
from inference.records import Record, read_records

REPO = Path(__file__).resolve().parents[1]


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def _upright() -> Image.Image:
    """A picture whose orientation shows: a red top-left block on a gradient."""
    a = np.zeros((40, 64, 3), dtype=np.uint8)
    a[..., 1] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    a[:10, :16] = (255, 0, 0)
    return Image.fromarray(a, "RGB")


def zoo(folder: Path) -> dict[str, tuple[str, object]]:
    """name -> (file name, expected): an RGB array the loader must give, or the skip reason."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[str, object]] = {}

    def save(name: str, write, expected) -> None:
        write(folder / name)
        out[name.split(".")[0]] = (name, expected)

    save("one_pixel.png", lambda p: Image.new("RGB", (1, 1), "red").save(p), "image_too_small")
    save("strip.png", lambda p: Image.new("RGB", (4000, 8), "red").save(p), "image_too_small")
    save("long.png", lambda p: Image.new("RGB", (6000, 29), "red").save(p), "aspect_ratio_too_large")
    upright = _upright()
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; displays upright after a 90-degree turn
    save(
        "rotated.png",
        lambda p: upright.transpose(Image.Transpose.ROTATE_270).save(p, exif=exif.tobytes()),
        np.asarray(upright),
    )
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    pal.paste(1, (0, 0, 16, 32))  # left half colour 1, right half colour 0 (transparent)
    expected = np.full((32, 32, 3), 255, dtype=np.uint8)
    expected[:, :16] = (200, 30, 30)
    save("palette.png", lambda p: pal.save(p, transparency=0), expected)
    save(
        "cmyk.tif",
        lambda p: Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p),
        np.full((32, 32, 3), (255, 0, 0), np.uint8),
    )
    deep = np.zeros((32, 32), dtype=np.uint16)
    deep[:, 16:] = 65535
    grey = np.repeat(np.where(deep > 0, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    save("deep.png", lambda p: Image.fromarray(deep).save(p), grey)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    save(
        "truncated.png", lambda p: p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]), "corrupt_image"
    )
    save("bomb.png", lambda p: p.write_bytes(_bomb_png(100_000, 100_000)), "decompression_bomb")
    return out


class IdentityEditor(Editor):
    """Returns its input: the pipeline's output PNG shows the pixels its loader produced."""

    name = model_id = "identity"

    def edit(self, image, instruction, seed=0):
        return image


def test_the_zoo_gives_the_same_pixels_or_the_same_reason_in_data_prep_and_the_pipeline(tmp_path):
    cases = zoo(tmp_path / "zoo")
    rows = [{"id": name, "prompt": f"fix {name}", "path": file} for name, (file, _) in cases.items()]
    (tmp_path / "zoo" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from data_prep.readers import ColumnMap

    report = build_eval_set(
        tmp_path / "zoo" / "rows.jsonl",
        tmp_path / "data",
        columns=ColumnMap(id="id", instruction="prompt", image="path"),
        progress=False,
    )
    kept = {r.id: np.asarray(Image.open(r.image).convert("RGB")) for r in read_records(tmp_path / "data")}
    skipped = {e.split(":", 1)[0]: reason for reason, examples in report.examples.items() for e in examples}

    items = [Record(name, "zoo", f"fix {name}", tmp_path / "zoo" / file) for name, (file, _) in cases.items()]
    EditingPipeline(IdentityEditor()).run(items, tmp_path / "out", "original", progress=False)
    traces = {t["id"]: t for t in read_traces(tmp_path / "out" / "original")}

    for name, (_, expected) in cases.items():
        trace = traces[name]
        if isinstance(expected, str):
            assert skipped.get(name) == expected, (name, skipped.get(name))
            assert trace["error"] and trace["error"].startswith(expected + ":"), (name, trace["error"])
        else:
            assert name in kept and trace["error"] is None, (name, trace["error"])
            produced = np.asarray(Image.open(trace["output_image"]).convert("RGB"))
            assert np.array_equal(kept[name], produced), name  # same pixels in both
            assert np.abs(kept[name].astype(int) - expected.astype(int)).max() <= 2, (
                name
            )  # and the right ones


def test_fitness_bounds_match_the_qwen2_vl_processor():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(MIN_SIDE, int(MIN_SIDE * MAX_ASPECT_RATIO) + MIN_SIDE)
    smart_resize(MIN_SIDE, int(MIN_SIDE * MAX_ASPECT_RATIO))  # the largest ratio we accept passes
    check_fit(MIN_SIDE, int(MIN_SIDE * MAX_ASPECT_RATIO))
    with pytest.raises(BadImage, match="aspect_ratio_too_large"):
        check_fit(MIN_SIDE, int(MIN_SIDE * MAX_ASPECT_RATIO) + MIN_SIDE)
    with pytest.raises(BadImage, match="image_too_small"):
        check_fit(MIN_SIDE - 1, 100)


def test_load_image_keeps_the_callers_pil_image_untouched():
    src = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image, notes = load_image(src)
    assert image.mode == "RGB" and src.mode == "RGBA" and "converted_from_RGBA" in notes


def test_a_sigkilled_data_prep_run_leaves_no_temp_file_after_the_rerun(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8)).save(src / "noise.png")
    rows = [{"id": f"r{i:03d}", "prompt": "brighten it", "path": "noise.png"} for i in range(160)]
    (src / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "data_prep.build", "eval", "--input", str(src / "rows.jsonl"), "--out", str(out),
        "--columns", "id=id", "instruction=prompt", "image=path", "--shard-rows", "8", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    saw_temp = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(out.glob("**/.*.tmp")):
            saw_temp = True
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if not saw_temp:  # the kill fell between two writes: leave what a kill mid-write leaves
        (out / "images" / ".r999.png.abcd.tmp").write_bytes(b"half")
    assert any(out.glob("**/.*.tmp"))
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob("**/.*.tmp"))
    assert [r.id for r in read_records(out)] == [r["id"] for r in rows]


def test_remove_stale_temps_only_touches_temp_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".x.json.1234.tmp").write_text("half")
    (tmp_path / ".records.jsonl.99.tmp").write_text("half")
    (tmp_path / "keep.tmp").write_text("not ours: no leading dot")
    (tmp_path / "records.jsonl").write_text("{}\n")
    assert remove_stale_temps(tmp_path, recursive=False, target="other.jsonl") == 0
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep.tmp", "records.jsonl"]


def test_atomic_dir_replaces_a_folder_whole_and_leaves_nothing_on_error(tmp_path):
    from inference.fileio import atomic_dir, remove_stale_temps

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced, not merged
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "c").write_text("half")
        raise RuntimeError("builder failed")
    assert sorted(p.name for p in target.iterdir()) == ["b"] and list(tmp_path.iterdir()) == [target]
    with atomic_dir(target, keep_existing=True) as tmp:  # a shared cache: the folder already there wins
        (tmp / "d").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    killed = tmp_path / ".model.x1y2.tmp"  # what a killed build leaves
    killed.mkdir()
    (killed / "part").write_text("x")
    assert remove_stale_temps(tmp_path) == 1 and not killed.exists()
