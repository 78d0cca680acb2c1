"""Benchmark readers and the eval-set builder on small fixture files in each benchmark's schema,
plus every kind of bad input (each one normalised or skipped and counted, never silently)."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from data_prep.build import build_eval_set, build_rl_data, cli, main, sample_ranks
from data_prep.readers import PRESETS, ColumnError, ColumnMap, open_source
from inference.fileio import BadImage, load_image
from inference.records import read_records


def png(colour="red", size=(48, 36), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width=60000, height=60000) -> bytes:
    """A valid PNG header claiming a huge image (a few bytes on disk)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def odd_images() -> dict[str, bytes]:
    """Images real datasets hold, each needing a normalisation."""
    out = {}
    buf = io.BytesIO()
    Image.new("CMYK", (40, 32), (0, 255, 255, 0)).save(buf, format="JPEG")
    out["cmyk"] = buf.getvalue()
    out["rgba"] = png((255, 0, 0, 0), mode="RGBA")  # fully transparent: composited onto white
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16)).save(buf, format="PNG")
    out["gray16"] = buf.getvalue()
    buf = io.BytesIO()
    pal = Image.new("P", (32, 32), 0)  # index 0 is transparent
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(buf, format="PNG", transparency=0)
    out["palette"] = buf.getvalue()
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    Image.new("RGB", (60, 30), "green").save(buf, format="JPEG", exif=exif.tobytes())
    out["exif"] = buf.getvalue()
    return out


def test_load_image_normalises_what_it_can():
    images = odd_images()
    rgb, notes = load_image(images["cmyk"])
    assert rgb.mode == "RGB" and "converted_from_CMYK" in notes
    rgb, notes = load_image(images["rgba"])
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and "converted_from_RGBA" in notes
    rgb, notes = load_image(images["gray16"])
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and any("I16" in n for n in notes)
    rgb, _ = load_image(images["palette"])
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    rgb, notes = load_image(images["exif"])
    assert rgb.size == (30, 60) and "exif_rotated" in notes
    rgb, notes = load_image({"bytes": png(size=(400, 200)), "path": None}, max_side=100)
    assert rgb.size == (100, 50) and "downscaled" in notes


@pytest.mark.parametrize(
    "value,reason",
    [
        (b"not an image", "corrupt_image"),
        (png(size=(64, 64))[:60], "corrupt_image"),
        (bomb_png(), "decompression_bomb"),
        ("no/such/file.png", "missing_file"),
        (None, "missing_image"),
        (b"", "missing_image"),
        ({"bytes": None, "path": None}, "missing_image"),
        (png(size=(1, 1)), "image_too_small"),
        (png(size=(27, 400)), "image_too_small"),
        (png(size=(6000, 29)), "aspect_ratio_too_large"),
    ],
)
def test_load_image_rejects_with_a_reason(value, reason, tmp_path):
    with pytest.raises(BadImage) as info:
        load_image(value, base_dir=tmp_path)
    assert info.value.reason == reason


# ---------------------------------------------------------------------------------------------
# Fixtures in each benchmark's schema


def ultraedit_hf(tmp_path, n_per_split=6):
    """UltraEdit layout: FreeForm_* splits, image features, its metric columns."""
    features = datasets.Features(
        {
            "idx": datasets.Value("int64"),
            "edit_prompt": datasets.Value("string"),
            "source_caption": datasets.Value("string"),
            "target_caption": datasets.Value("string"),
            "source_image": datasets.Image(),
            "edited_image": datasets.Image(),
            "mask_image": datasets.Image(),
            "clip_sim_source": datasets.Value("float32"),
            "clip_sim_target": datasets.Value("float32"),
            "clip_sim_dir": datasets.Value("float32"),
            "clip_sim_image": datasets.Value("float32"),
            "dinov2_sim": datasets.Value("float32"),
            "ssim": datasets.Value("float32"),
            "edit_object": datasets.Value("string"),
        }
    )
    splits = {}
    for s in range(2):
        rows = []
        for i in range(n_per_split):
            idx = s * 100 + i
            rows.append(
                {
                    "idx": idx,
                    "edit_prompt": f"make the cup number {idx} blue",
                    "source_caption": "a cup",
                    "target_caption": "a blue cup",
                    "source_image": {"bytes": png("red"), "path": None},
                    "edited_image": {"bytes": png("blue"), "path": None},
                    "mask_image": None,
                    "clip_sim_source": 0.3,
                    "clip_sim_target": 0.3,
                    "clip_sim_dir": 0.2,
                    "clip_sim_image": 0.9,
                    "dinov2_sim": 0.9,
                    "ssim": 0.8,
                    "edit_object": "cup",
                }
            )
        rows[1]["edit_prompt"] = "   "  # empty instruction
        rows[2]["source_image"] = {"bytes": b"garbage", "path": None}  # corrupt image
        splits[f"FreeForm_{s}"] = datasets.Dataset.from_list(rows, features=features)
    path = tmp_path / "UltraEdit"
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def realedit_csv(tmp_path, n=30):
    """RealEdit curation CSV: orig_img, instruction, edit_images ('|'-joined), images in a folder."""
    folder = tmp_path / "realedit"
    (folder / "images").mkdir(parents=True)
    odd = odd_images()
    with (folder / "test.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["orig_img", "instruction", "edit_images"])
        for i in range(n):
            name = f"images/in{i}.png"
            kind = list(odd)[i % len(odd)] if i < 10 else None
            (folder / name).write_bytes(odd[kind] if kind else png("gray"))
            refs = []
            for j in range(2):
                ref = f"images/out{i}_{j}.png"
                (folder / ref).write_bytes(png("white"))
                refs.append(ref)
            if i == 12:
                name = "images/missing.png"  # missing file
            writer.writerow([name, f"please remove the person number {i}", "|".join(refs)])
    return folder / "test.csv"


def psr_parquet(tmp_path, n=9):
    """taesiri/PhotoshopRequests layout: reddit_id, original_image/edit_image structs, description."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("reddit_id", pa.string()),
            ("original_image", image),
            ("edit_image", image),
            ("description", pa.string()),
        ]
    )
    rows = [
        {
            "reddit_id": f"t3_{i:03x}",
            "original_image": {"bytes": bomb_png() if i == 4 else png("orange"), "path": f"{i}.png"},
            "edit_image": {"bytes": png("purple"), "path": None},
            "description": f"Can someone brighten this photo of my dog {i}?",
        }
        for i in range(n)
    ]
    folder = tmp_path / "psr" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:5], schema=schema), folder / "test-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[5:], schema=schema), folder / "test-00001-of-00002.parquet")
    return folder.parent


def test_ultraedit_hf_folder(tmp_path):
    src = ultraedit_hf(tmp_path)
    table = open_source(src, split="FreeForm_1")
    assert table.kind == "hf" and len(table) == 6 and "edit_prompt" in table.columns
    with pytest.raises(ValueError, match="FreeForm_0"):
        open_source(src)  # two splits, none chosen
    out = tmp_path / "ultraedit_eval"
    report = build_eval_set(src, out, preset="ultraedit", split="FreeForm_0", progress=False)
    records = list(read_records(out))
    assert report.seen == 6 and report.kept == 4 == len(records)
    assert report.skipped == {"empty_instruction": 1, "corrupt_image": 1}
    assert records[0].id == "0" and records[0].source == "ultraedit"
    assert records[0].load_image().getpixel((0, 0)) == (255, 0, 0)
    assert records[0].load_references()[0].getpixel((0, 0)) == (0, 0, 255)
    every = tmp_path / "ultraedit_all"  # the preset samples across every FreeForm_* split
    report = build_eval_set(src, every, preset="ultraedit", progress=False)
    assert report.seen == 12 and report.kept == 8
    assert {r.id for r in read_records(every)} >= {"0", "100"}
    saved = json.loads((out / "report.json").read_text())
    assert saved["skipped_by_reason"]["corrupt_image"] == 1 and saved["examples"]["corrupt_image"]


def test_realedit_csv_with_image_folder_and_bad_rows(tmp_path):
    csv_path = realedit_csv(tmp_path)
    out = tmp_path / "realedit_eval"
    report = build_eval_set(csv_path, out, preset="realedit", sample=20, seed=0, shard_rows=7, progress=False)
    records = list(read_records(out))
    assert len(records) == 20  # the missing-file row (if sampled) was replaced by a spare
    assert report.kept == 20 and report.n_skipped <= 1
    assert all(len(r.references) == 2 for r in records)
    assert all(r.load_image().mode == "RGB" for r in records)
    again = tmp_path / "again"
    build_eval_set(csv_path, again, preset="realedit", sample=20, seed=0, shard_rows=5, progress=False)
    assert [r.id for r in read_records(again)] == [r.id for r in records]  # fixed seed, any sharding
    other = tmp_path / "other"
    build_eval_set(csv_path, other, preset="realedit", sample=20, seed=1, progress=False)
    assert [r.id for r in read_records(other)] != [r.id for r in records]
    # every row, with every odd image normalised and counted
    full = tmp_path / "full"
    report = build_eval_set(csv_path, full, preset="realedit", sample=None, progress=False)
    assert report.seen == 30 and report.kept == 29 and report.skipped == {"missing_file": 1}
    assert {"converted_from_CMYK", "exif_rotated", "converted_from_RGBA"} <= set(report.normalised)
    assert not list(full.glob("images/*missing*"))


def test_psr_parquet_shards_keep_every_request(tmp_path):
    src = psr_parquet(tmp_path)
    assert PRESETS["photoshop-requests"].eval_sample is None
    out = tmp_path / "psr_eval"
    report = build_eval_set(src, out, preset="photoshop-requests", progress=False)
    ids = [r.id for r in read_records(out)]
    assert report.seen == 9 and report.skipped == {"decompression_bomb": 1}
    assert ids == [f"t3_{i:03x}" for i in range(9) if i != 4]


def test_missing_column_lists_the_columns_present(tmp_path):
    src = psr_parquet(tmp_path)
    with pytest.raises(ColumnError, match=r"missing column\(s\) \['prompt'\].*description"):
        build_eval_set(
            src,
            tmp_path / "x",
            preset="photoshop-requests",
            columns=ColumnMap(instruction="prompt", image="original_image"),
        )
    with pytest.raises(ValueError, match="unknown column-map key"):
        PRESETS["photoshop-requests"].columns.with_overrides({"caption": "x"})


def test_cli_resume_skips_finished_shards_and_workers_agree(capsys, tmp_path):
    csv_path = realedit_csv(tmp_path)
    out = tmp_path / "cli"
    args = ["eval", "--preset", "realedit", "--input", str(csv_path), "--out", str(out), "--sample", "-1"]
    assert main([*args, "--shard-rows", "8", "--no-progress"]) == 0
    first = (out / "records.jsonl").read_text()
    shard0 = out / "parts" / "shard-00000.jsonl"
    stamp = shard0.stat().st_mtime_ns
    (out / "parts" / "shard-00002.jsonl").unlink()  # as if killed mid-run
    (out / "records.jsonl").unlink()
    assert main([*args, "--shard-rows", "8", "--no-progress"]) == 0
    assert (out / "records.jsonl").read_text() == first
    assert shard0.stat().st_mtime_ns == stamp  # finished shard not redone
    assert cli([*args, "--shard-rows", "4", "--no-progress"]) == 2  # one line, no traceback
    assert "data_prep eval: error: ValueError:" in capsys.readouterr().err
    with pytest.raises(ValueError, match="other settings"):
        cli([*args, "--shard-rows", "4", "--no-progress", "--debug"])
    with pytest.raises(ValueError, match="other settings"):  # main is the library call: it raises
        main([*args, "--shard-rows", "4", "--no-progress"])
    par = tmp_path / "par"
    main(
        ["eval", "--preset", "realedit", "--input", str(csv_path), "--out", str(par), "--sample", "-1"]
        + ["--workers", "2", "--no-progress"]
    )
    assert (par / "records.jsonl").read_text() == first


def test_sample_ranks_are_seeded_with_spares():
    ranks = sample_ranks(9337, 1000, seed=0)
    assert len(ranks) == 1050 and sorted(ranks.values()) == list(range(1050))
    assert ranks == sample_ranks(9337, 1000, seed=0) and ranks != sample_ranks(9337, 1000, seed=1)
    assert sample_ranks(328, None, 0) is None and sample_ranks(50, 1000, 0) is None


def test_ground_truth_import_attach_and_rl_data(tmp_path):
    src = psr_parquet(tmp_path)
    gt = tmp_path / "gt.jsonl"
    lines = [
        {
            "id": "t3_000",
            "decomposition": {"actions": ["brighten"], "subjects": ["photo"], "goals": ["brighter"]},
        },
        {"id": "t3_001", "actions": ["remove"], "subjects": ["dog"], "goals": ["removed"]},
        {"id": "t3_002", "decomposition": {"actions": "brighten"}},  # invalid: counted, not fatal
    ]
    gt.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    out = tmp_path / "psr_eval"
    report = build_eval_set(src, out, preset="photoshop-requests", ground_truth=gt, progress=False)
    assert (
        report.normalised["ground_truth_attached"] == 2
        and report.normalised["ground_truth_invalid_ground_truth"] == 2
    )
    by_id = {r.id: r for r in read_records(out)}
    assert by_id["t3_001"].decomposition.actions == ("remove",) and by_id["t3_003"].decomposition is None
    # attach later through the CLI (in place)
    assert main(["attach", "--records", str(out), "--ground-truth", str(gt)]) == 0
    rl = tmp_path / "rl"
    report = build_rl_data(out, rl, val_fraction=0.0, progress=False)
    assert report.kept == 2 and report.skipped["no_ground_truth"] == 6
    table = pq.read_table(rl / "train.parquet")
    sharded = tmp_path / "rl_sharded"
    build_rl_data(out, sharded, val_fraction=0.0, shard_rows=1, progress=False)
    shards = sorted(p.name for p in sharded.glob("train-*.parquet"))
    assert shards == ["train-00000.parquet", "train-00001.parquet"]
    assert pq.read_table(sharded / "sft_train-00001.parquet").num_rows == 1
    assert not list(sharded.glob(".*.tmp"))
    assert table.num_rows == 2
    gts = sorted(
        json.loads(g)["actions"][0]
        for g in table.column("reward_model").combine_chunks().field("ground_truth").to_pylist()
    )
    assert gts == ["brighten", "remove"]
    assert pq.read_table(rl / "val.parquet").num_rows == 0


def _expected_sample(ids_by_index: dict[int, str], bad: set[int], k: int, seed: int) -> list[str]:
    ranks = sample_ranks(len(ids_by_index), k, seed)
    good = sorted((rank, index) for index, rank in ranks.items() if index not in bad)
    return [ids_by_index[index] for _, index in good[:k]]


def test_sampling_reads_only_the_chosen_rows_of_hf_and_parquet_sources(tmp_path):
    hf = ultraedit_hf(tmp_path)
    out = tmp_path / "hf_sample"
    build_eval_set(hf, out, preset="ultraedit", sample=1, seed=3, progress=False)
    ids = {i: str(idx) for i, idx in enumerate([*range(6), *range(100, 106)])}
    assert [r.id for r in read_records(out)] == _expected_sample(ids, {1, 2, 7, 8}, 1, 3)
    src = psr_parquet(tmp_path)
    out = tmp_path / "pq_sample"
    report = build_eval_set(src, out, preset="photoshop-requests", sample=2, seed=7, progress=False)
    ids = {i: f"t3_{i:03x}" for i in range(9)}
    assert [r.id for r in read_records(out)] == _expected_sample(ids, {4}, 2, 7)
    assert report.kept == 2 and report.normalised["spare_candidate_unused"] == 6
    assert len(list((out / "images").glob("*.png"))) == 4  # inputs + references of the 2 kept


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=80), json_values.map(json.dumps)), max_size=6))
def test_ground_truth_reader_counts_any_bad_line_and_never_crashes(tmp_path_factory, lines):
    from data_prep.groundtruth import read_ground_truth
    from data_prep.report import Report

    path = tmp_path_factory.mktemp("gt") / "gt.jsonl"
    path.write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n")
    report = Report()
    truth = read_ground_truth(path, report)
    assert report.seen == report.kept + report.n_skipped
    assert len(truth) <= report.kept


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_record_parser_raises_only_value_error(value):
    from inference.records import Record

    try:
        Record.from_json(value if isinstance(value, dict) else {"x": value}, "/tmp")
    except ValueError:
        pass


# ------------------------------------------------------------------------------ benchmark schemas


def psr328_parquet(tmp_path):
    """PSRDataset/PSR-328 layout: several rows (edits) per post_id."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("post_id", pa.string()), ("instruction", pa.string()), ("simplified_instruction", pa.string())]
        + [(c, image) for c in ("source_image", "ai_edited_image", "human_edited_image")]
    )
    colours = ["red", "green", "blue"]
    rows = [
        {
            "post_id": f"p{post}",
            "instruction": f"Please fix photo {post}",
            "simplified_instruction": "fix",
            "source_image": {"bytes": png("orange"), "path": None},
            "ai_edited_image": {"bytes": png("black"), "path": None},
            "human_edited_image": {"bytes": png(colours[edit]), "path": None},
        }
        for post in range(3)
        for edit in range(post + 1)  # posts with 1, 2 and 3 human edits
    ]
    path = tmp_path / "psr328.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_psr328_is_one_item_per_post_with_every_human_edit_as_reference(tmp_path):
    report = build_eval_set(psr328_parquet(tmp_path), tmp_path / "out", preset="psr-328", progress=False)
    records = list(read_records(tmp_path / "out"))
    assert [r.id for r in records] == ["p0", "p1", "p2"] and report.kept == 3 and report.seen == 3
    assert [len(r.references) for r in records] == [1, 2, 3]
    assert [Image.open(p).getpixel((0, 0)) for p in records[2].references] == [
        (255, 0, 0),
        (0, 128, 0),
        (0, 0, 255),
    ]


def test_gedit_bench_keeps_english_rows_unless_told_otherwise(tmp_path):
    rows = [
        {"key": f"k{i}-{lang}", "task_type": "color_alter", "instruction": f"{lang} {i}", "instruction_language": lang,
         "input_image": {"bytes": png("gray"), "path": None}}
        for i in range(3) for lang in ("en", "cn")
    ]  # fmt: skip
    path = tmp_path / "gedit.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    build_eval_set(path, tmp_path / "en", preset="gedit-bench", progress=False)
    assert [r.instruction for r in read_records(tmp_path / "en")] == ["en 0", "en 1", "en 2"]
    cn = PRESETS["gedit-bench"].columns.with_overrides({"where": "instruction_language=cn"})
    build_eval_set(path, tmp_path / "cn", preset="gedit-bench", columns=cn, progress=False)
    assert [r.id for r in read_records(tmp_path / "cn")] == ["k0-cn", "k1-cn", "k2-cn"]


def test_a_json_array_input_is_read_as_an_array(tmp_path):
    (tmp_path / "a.png").write_bytes(png("red"))
    rows = [{"id": f"r{i}", "prompt": f"make it blue {i}", "path": "a.png"} for i in range(3)]
    (tmp_path / "rows.json").write_text(json.dumps(rows, indent=2))
    table = open_source(tmp_path / "rows.json")
    assert table.kind == "json" and table.columns == ["id", "prompt", "path"] and len(table) == 3
    columns = ColumnMap(id="id", instruction="prompt", image="path")
    build_eval_set(tmp_path / "rows.json", tmp_path / "out", columns=columns, progress=False)
    assert [r.id for r in read_records(tmp_path / "out")] == ["r0", "r1", "r2"]
    (tmp_path / "bad.json").write_text('[{"id": 1}, 3]')
    with pytest.raises(ValueError, match=r"element 1 of the array is int, not an object"):
        open_source(tmp_path / "bad.json")
    (tmp_path / "lines.json").write_text('{"id": "x", "prompt": "p", "path": "a.png"}\n')  # JSONL named .json
    assert open_source(tmp_path / "lines.json").kind == "jsonl"


def test_stages_that_keep_nothing_or_lose_too_much_exit_non_zero(tmp_path, capsys):
    csv_path = tmp_path / "test.csv"
    csv_path.write_text(
        "input_image_name,instruction\n" + "".join(f"img{i}.png,edit {i}\n" for i in range(6))
    )
    args = ["eval", "--preset", "realedit-csv", "--input", str(csv_path), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "data_prep eval: FAILED: kept nothing: kept 0 of 6; top reasons: missing_file=6" in err
    for i in range(2):
        (tmp_path / f"img{i}.png").write_bytes(png("red"))
    assert main([*args, "--out", str(tmp_path / "b")]) == 1  # 4 of 6 lost > half
    assert "lost 67% > --max-loss 50%" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "c"), "--max-loss", "0.7"]) == 0
    assert main(["rl", "--records", str(tmp_path / "c"), "--out", str(tmp_path / "rl"), "--no-progress"]) == 1
    assert "no_ground_truth=2" in capsys.readouterr().err
    assert cli(["eval", "--preset", "realedit-csv", "--input", str(tmp_path / "nope.csv"), "--out", "x"]) == 2
    assert (
        capsys.readouterr().err.strip().startswith("data_prep eval: error: FileNotFoundError: no dataset at")
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from(["en", "cn"]), st.text(max_size=5)), max_size=20
    )
)
def test_grouping_and_filtering_keep_every_matching_reference_once(rows):
    from data_prep.readers import _selected

    m = ColumnMap(
        id="id", instruction="i", image="im", references=("ref",), group_by_id=True, where=(("lang", "en"),)
    )
    table = [
        (n, {"id": k, "lang": lang, "i": "x", "im": "y", "ref": r}) for n, (k, lang, r) in enumerate(rows)
    ]
    out = list(_selected(iter(table), m, None))
    english = [(k, r) for k, lang, r in rows if lang == "en"]
    assert [row["id"] for _, row in out] == list(dict.fromkeys(k for k, _ in english))
    assert [i for i, _ in out] == list(range(len(out)))
    for _, row in out:
        assert row["ref"] == [r for k, r in english if k == row["id"] and r != ""]


@given(st.text(max_size=40))
def test_where_overrides_parse_or_fail_clearly(text):
    try:
        m = ColumnMap(instruction="i", image="im").with_overrides({"where": text})
    except ValueError as exc:
        assert "where wants column=value" in str(exc)
    else:
        assert all(isinstance(c, str) and c for c, _ in m.where)
