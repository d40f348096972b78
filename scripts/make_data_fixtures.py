"""Writes the data crate's test fixtures with the reference tools: pyarrow (img2dataset's parquet
schema), Hugging Face `datasets` (its parquet export, images as `Image` features) and Python's
tarfile (WebDataset tars), images by Pillow; plus the bad inputs.

Usage: scripts/python_env.sh data && .venv-data/bin/python scripts/make_data_fixtures.py
Output: data/tests/fixtures/ (committed; small). expected.json states what a reader must find.
"""

import io
import json
import os
import struct
import tarfile
import zlib

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "tests", "fixtures")


def gradient(w, h, seed):
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = ((x * 255 // max(w - 1, 1) + seed * 40) % 256,
                        (y * 255 // max(h - 1, 1)) % 256, (seed * 70 + (x ^ y)) % 256)
    return img


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def patch_jpeg_size(data, w, h):
    """Rewrites the SOF0 frame size: a header claiming w x h over a small body."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def patch_png_size(data, w, h):
    ihdr = bytearray(data[8 + 8:8 + 8 + 13])
    ihdr[0:8] = struct.pack(">II", w, h)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:16] + bytes(ihdr) + crc + data[16 + 13 + 4:]


def img2dataset_table(rows):
    schema = pa.schema([
        ("key", pa.string()), ("jpg", pa.binary()), ("url", pa.string()),
        ("caption", pa.string()), ("punsafe", pa.float32()), ("pwatermark", pa.float32()),
        ("similarity", pa.float64()), ("AESTHETIC_SCORE", pa.float32()),
        ("error_message", pa.string()), ("status", pa.string()), ("width", pa.int64()),
        ("height", pa.int64()), ("original_width", pa.int64()), ("original_height", pa.int64()),
        ("exif", pa.string()), ("sha256", pa.string()),
    ])
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    return pa.table(cols, schema=schema)


def row(key, image, caption, size, status="success", **meta):
    w, h = size
    r = dict(key=key, jpg=image, url=f"https://example.com/{key}.jpg", caption=caption,
             punsafe=0.1, pwatermark=0.2, similarity=0.31, AESTHETIC_SCORE=5.5,
             error_message=None if status == "success" else "failed to download",
             status=status, width=w if image else None, height=h if image else None,
             original_width=w * 2 if image else None, original_height=h * 2 if image else None,
             exif="{}", sha256=None)
    r.update(meta)
    return r


def main():
    os.makedirs(os.path.join(OUT, "bad"), exist_ok=True)
    expected = {}

    # --- A good img2dataset parquet shard, 3 row groups, with failed downloads. ---
    sizes = [(48, 32), (32, 48), (40, 40), (64, 40), (36, 52), (44, 44), (56, 32), (32, 32)]
    rows, good, jpegs = [], [], []
    for i, (w, h) in enumerate(sizes):
        key = f"00000{i:04d}"
        jpegs.append(encode(gradient(w, h, i), "JPEG", quality=90))
        rows.append(row(key, jpegs[-1], f"gradient {i}", (w, h), punsafe=0.05 * i))
        good.append(key)
    rows.insert(2, row("000000100", None, "a failed download", (0, 0),
                       status="failed_to_download"))
    rows.insert(7, row("000000101", encode(gradient(32, 32, 9), "JPEG"), None, (32, 32)))
    pq.write_table(img2dataset_table(rows), os.path.join(OUT, "img2dataset.parquet"),
                   row_group_size=4)
    expected["img2dataset.parquet"] = {
        "good": good, "skipped": {"not_success": 1, "missing_caption": 1},
        "row_groups": 3, "rows": len(rows)}

    # Reference decodes by Pillow: the full image, and a 16x16 centre crop resized the way a
    # PyTorch worker does (shorter side to 16 with BILINEAR, which is antialiased, then crop).
    for i in (0, 1, 3):
        img = Image.open(io.BytesIO(jpegs[i])).convert("RGB")
        with open(os.path.join(OUT, f"pillow_{i}_full.rgb"), "wb") as f:
            f.write(img.tobytes())
        w, h = img.size
        s = 16 / min(w, h)
        small = img.resize((max(16, round(w * s)), max(16, round(h * s))), Image.BILINEAR)
        l, t = (small.width - 16) // 2, (small.height - 16) // 2
        with open(os.path.join(OUT, f"pillow_{i}_16.rgb"), "wb") as f:
            f.write(small.crop((l, t, l + 16, t + 16)).tobytes())
    expected["pillow"] = {"0": list(sizes[0]), "1": list(sizes[1]), "3": list(sizes[3])}

    # --- A good WebDataset tar by tarfile: jpg, png and webp payloads, pax headers, a dir. ---
    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(os.path.join(OUT, "webdataset.tar"), "w", format=tarfile.PAX_FORMAT) as tar:
        samples = [("s/000000000", "jpg", encode(gradient(40, 30, 1), "JPEG")),
                   ("s/000000001", "png", encode(gradient(30, 40, 2), "PNG")),
                   ("s/000000002", "webp", encode(gradient(33, 33, 3), "WEBP", lossless=True)),
                   ("s/" + "long" * 40 + "000003", "jpeg", encode(gradient(24, 24, 4), "JPEG"))]
        for key, ext, data in samples:
            add(tar, f"{key}.{ext}", data)
            add(tar, f"{key}.txt", f"caption of {key.split('/')[-1]}".encode())
            add(tar, f"{key}.json", json.dumps({"key": key, "status": "success",
                                                "original_width": 80, "original_height": 60,
                                                "punsafe": 0.01}).encode())
        # A failed download (json only), a sample without caption, and a text file as image.
        add(tar, "s/000000010.json", json.dumps({"status": "failed_to_download"}).encode())
        add(tar, "s/000000011.jpg", encode(gradient(20, 20, 5), "JPEG"))
        add(tar, "s/000000012.jpg", b"<html>not found</html>")
        add(tar, "s/000000012.txt", b"an html page")
    expected["webdataset.tar"] = {
        "good": [s[0] for s in samples], "skipped": {"not_success": 1, "missing_caption": 1},
        "decode_skipped": {"not_an_image": 1}}

    # --- Other layouts, read through data.columns. ---
    # A Hugging Face `datasets` export: `image` a struct {bytes, path} (the Image feature; PIL
    # images are stored as PNG), captions under `text`; one row without an image, one without text.
    hf_images = [gradient(24, 20, 1), gradient(20, 28, 2), None, gradient(30, 30, 3),
                 gradient(26, 22, 4)]
    hf_texts = ["hf caption 0", "hf caption 1", "hf caption 2", None, "hf caption 4"]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    hf = datasets.Dataset.from_dict({"image": hf_images, "text": hf_texts}, features=features)
    hf.to_parquet(os.path.join(OUT, "hf_datasets.parquet"))
    expected["hf_datasets.parquet"] = {
        "captions": ["hf caption 0", "hf caption 1", "hf caption 4"],
        "sizes": [[24, 20], [20, 28], [26, 22]],
        "skipped": {"missing_image": 1, "missing_caption": 1}}
    # Two image columns, each filled in some rows only: a row's image is the first non-null.
    two = pa.table({
        "key": ["t0", "t1", "t2"],
        "jpg": [encode(gradient(12, 10, 1), "JPEG"), None, None],
        "png": [None, encode(gradient(14, 10, 2), "PNG"), None],
        "caption": ["from jpg", "from png", "no image"],
    })
    pq.write_table(two, os.path.join(OUT, "two_image_columns.parquet"))
    expected["two_image_columns.parquet"] = {
        "captions": ["from jpg", "from png"], "sizes": [[12, 10], [14, 10]],
        "skipped": {"missing_image": 1}}
    # A WebDataset tar whose captions are `.prompt` members (or a `prompt` field of the json) and
    # whose images are `.webp`, beside a `.jpg` thumbnail that is not the image.
    with tarfile.open(os.path.join(OUT, "custom_members.tar"), "w",
                      format=tarfile.PAX_FORMAT) as tar:
        for i in range(3):
            add(tar, f"c{i}.jpg", encode(gradient(8, 8, i), "JPEG"))
            add(tar, f"c{i}.webp", encode(gradient(20 + i, 18, i), "WEBP", lossless=True))
            if i == 1:
                add(tar, f"c{i}.json", json.dumps({"prompt": f"prompt {i} (json)"}).encode())
            else:
                add(tar, f"c{i}.prompt", f"prompt {i}".encode())
            add(tar, f"c{i}.txt", b"not the caption")
    expected["custom_members.tar"] = {
        "captions": ["prompt 0", "prompt 1 (json)", "prompt 2"],
        "sizes": [[20, 18], [21, 18], [22, 18]]}

    # --- Bad inputs. ---
    bad = os.path.join(OUT, "bad")
    open(os.path.join(bad, "zero.tar"), "wb").close()
    open(os.path.join(bad, "zero.parquet"), "wb").close()
    tar_bytes = open(os.path.join(OUT, "webdataset.tar"), "rb").read()
    # Cut inside the data of the second sample's image.
    cut = tar_bytes.index(b"\x89PNG") + 100
    with open(os.path.join(bad, "truncated.tar"), "wb") as f:
        f.write(tar_bytes[:cut])
    pq_bytes = open(os.path.join(OUT, "img2dataset.parquet"), "rb").read()
    with open(os.path.join(bad, "damaged_footer.parquet"), "wb") as f:
        f.write(pq_bytes[:-12] + b"\x00" * 4 + pq_bytes[-8:])
    # Garble the middle of row group 1's image column chunk.
    meta = pq.ParquetFile(os.path.join(OUT, "img2dataset.parquet")).metadata
    chunk = meta.row_group(1).column(1)
    # The chunk starts at its dictionary page when it has one (pyarrow dictionary-encodes).
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    garbled = bytearray(pq_bytes)
    for k in range(start + 4, start + chunk.total_compressed_size - 4):
        garbled[k] = (garbled[k] * 31 + 7) % 256
    with open(os.path.join(bad, "damaged_row_group.parquet"), "wb") as f:
        f.write(bytes(garbled))
    expected["bad"] = {
        "zero.tar": {"empty_shard": 1}, "zero.parquet": {"empty_shard": 1},
        "truncated.tar": {"good": 1, "truncated_shard": 1},
        "damaged_footer.parquet": {"unreadable_shard": 1},
        "damaged_row_group.parquet": {"good_max": 6, "damaged_row_group": 1},
    }

    # Bad images inside an otherwise good tar.
    tiny = encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")
    huge_jpeg = patch_jpeg_size(encode(gradient(16, 16, 1), "JPEG"), 20000, 20000)
    huge_png = patch_png_size(encode(gradient(16, 16, 1), "PNG"), 20000, 20000)
    truncated_jpeg = encode(gradient(64, 64, 2), "JPEG")[:300]
    with tarfile.open(os.path.join(bad, "bad_images.tar"), "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, ext, data in [("a", "png", tiny), ("b", "jpg", huge_jpeg),
                               ("c", "png", huge_png), ("d", "jpg", truncated_jpeg),
                               ("e", "jpg", encode(gradient(32, 32, 3), "JPEG"))]:
            add(tar, f"{key}.{ext}", data)
            add(tar, f"{key}.txt", f"bad image {key}".encode())
    expected["bad"]["bad_images.tar"] = {
        "good": ["e"], "image_too_small": 1, "image_too_large": 2, "corrupt_image": 1}

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
