"""Photo intake: what is accepted, how it is cleaned, and every kind of file that is refused."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from store import photos
from store.errors import PhotoError
from store.photos import clean_photo, read_photo_file
from tests.store.helpers import noise_image, write_image


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def exif_with_orientation_and_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 21.0, 3.0),
    }
    return exif


def test_real_photo_is_kept_as_jpeg(dog_photos: list[Path]) -> None:
    data = dog_photos[0].read_bytes()
    clean = clean_photo(data, str(dog_photos[0]))
    assert (clean.format, clean.width, clean.height) == ("jpeg", 512, 512)
    stored = Image.open(io.BytesIO(clean.data))
    assert stored.format == "JPEG" and stored.size == (512, 512)
    assert clean.original_name == "00.jpg"
    thumb = Image.open(io.BytesIO(clean.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == photos.THUMBNAIL_SIDE


def test_exif_orientation_is_applied_and_gps_removed(tmp_path: Path) -> None:
    # Left half red, right half blue, 300x200; orientation 6 means "rotate 90 degrees clockwise to view".
    image = Image.new("RGB", (300, 200), (255, 0, 0))
    image.paste((0, 0, 255), (150, 0, 300, 200))
    source = tmp_path / "phone.jpg"
    image.save(source, "JPEG", quality=95, exif=exif_with_orientation_and_gps(6))
    original = Image.open(source)
    assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo), "the test photo must carry GPS"

    clean = clean_photo(source.read_bytes(), str(source))

    stored = Image.open(io.BytesIO(clean.data))
    assert stored.size == (200, 300)  # rotated upright
    top, bottom = stored.getpixel((100, 20)), stored.getpixel((100, 280))
    assert top[2] < 60 < top[0], "after a clockwise turn the red (left) half is on top"
    assert bottom[0] < 60 < bottom[2]
    assert not stored.getexif(), "no EXIF at all: orientation, camera and GPS are gone"
    assert b"Exif\x00\x00" not in clean.data and b"PhoneCo" not in clean.data
    assert clean.source_sha256 != clean.sha256


def test_metadata_is_stripped_from_png_and_jpeg_comments(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "48.85N 2.35E")
    png = write_image(tmp_path / "a.png", fmt="PNG", alpha=True, pnginfo=info)
    clean = clean_photo(png.read_bytes(), str(png))
    stored = Image.open(io.BytesIO(clean.data))
    assert clean.format == "png" and stored.mode == "RGBA" and not stored.text
    assert b"Location" not in clean.data

    jpeg = write_image(tmp_path / "b.jpg", comment=b"home address")
    clean = clean_photo(jpeg.read_bytes(), str(jpeg))
    assert b"home address" not in clean.data and "comment" not in Image.open(io.BytesIO(clean.data)).info


def test_webp_becomes_jpeg_or_png_with_transparency(tmp_path: Path) -> None:
    opaque = write_image(tmp_path / "a.webp", fmt="WEBP")
    assert clean_photo(opaque.read_bytes(), "a.webp").format == "jpeg"
    transparent = write_image(tmp_path / "b.webp", fmt="WEBP", alpha=True, lossless=True)
    assert clean_photo(transparent.read_bytes(), "b.webp").format == "png"


def test_pixels_survive_png_round_trip_exactly(tmp_path: Path) -> None:
    png = write_image(tmp_path / "a.png", fmt="PNG")
    clean = clean_photo(png.read_bytes(), str(png))
    assert Image.open(io.BytesIO(clean.data)).tobytes() == Image.open(png).tobytes()


def test_cleaning_is_deterministic(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.jpg")
    assert clean_photo(path.read_bytes(), "x").sha256 == clean_photo(path.read_bytes(), "y").sha256


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("just some text, not a photo\n") and p, "not a photo"),
        (lambda p: p.write_bytes(Path(write_image(p)).read_bytes()[:1500]) and p, "damaged or truncated"),
        (lambda p: p.write_bytes(png_bomb(100_000, 100_000)) and p, "too large"),
        (lambda p: p.write_bytes(png_bomb(30_000, 64)) and p, "too large"),
        (lambda p: write_image(p, size=(40, 300)), "too small"),
        (lambda p: write_image(p, fmt="GIF"), "not a photo"),
        (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64) and p, "HEIC"),
    ],
    ids=["text-as-jpg", "truncated-jpeg", "png-bomb", "absurd-width", "too-small", "gif", "heic"],
)
def test_bad_photos_are_refused(tmp_path: Path, make, message: str) -> None:
    if message == "HEIC" and photos.heif_available():
        pytest.skip("pillow-heif is installed: this checks the message shown without it")
    path = make(tmp_path / "photo.jpg")
    with pytest.raises(PhotoError, match=message):
        clean_photo(read_photo_file(path), str(path))


def test_truncated_real_photo_is_refused(dog_photos: list[Path]) -> None:
    data = dog_photos[0].read_bytes()
    with pytest.raises(PhotoError, match="damaged or truncated"):
        clean_photo(data[: len(data) // 2], "half.jpg")


def test_pillow_decompression_bomb_check_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Below the store's own pixel cap but above a (lowered) Pillow limit: Pillow's warning must refuse it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    data = io.BytesIO()
    noise_image((80, 80)).save(data, "PNG")
    with pytest.raises(PhotoError, match="too large to decode safely"):
        clean_photo(data.getvalue(), "bomb.png")


def test_file_level_refusals(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="cannot read"):
        read_photo_file(tmp_path / "missing.jpg")
    with pytest.raises(PhotoError, match="not a file"):
        read_photo_file(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(PhotoError, match="empty"):
        read_photo_file(empty)
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as out:
        out.truncate(photos.MAX_FILE_BYTES + 1)  # sparse: refused from its size, never read
    with pytest.raises(PhotoError, match="MB limit"):
        read_photo_file(huge)


def test_archived_photo_with_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gps.jpg"
    noise_image((100, 100)).save(path, "JPEG", exif=exif_with_orientation_and_gps(1))
    with pytest.raises(PhotoError, match="metadata"):
        photos.check_clean_photo(path.read_bytes(), "jpeg", "gps.jpg")
    clean = clean_photo(path.read_bytes(), "gps.jpg")
    assert photos.check_clean_photo(clean.data, "jpeg", "clean.jpg")[:2] == (100, 100)
