"""Photo intake: what is accepted, how it is cleaned, and every kind of file that is refused."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from store import photos
from store.errors import PhotoError
from store.photos import clean_photo, read_photo_file
from tests.store.helpers import PROFILE_TEXT, big_png, noise_image, tagged_profile, write_image

REPO = Path(__file__).resolve().parents[2]


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
    with pytest.raises(PhotoError, match=message) as refused:
        clean_photo(read_photo_file(path), str(path))
    if message == "HEIC":
        assert "pip install 'familiar[heic]'" in str(refused.value)


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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_icc_profile_is_applied_then_dropped(fmt: str) -> None:
    """Issue #18: profiles were kept byte for byte, and they can carry any text."""
    source = io.BytesIO()
    Image.new("RGB", (160, 120), (255, 0, 0)).save(source, fmt, icc_profile=tagged_profile())
    assert Image.open(source).info["icc_profile"] == tagged_profile()
    clean = clean_photo(source.getvalue(), f"red.{fmt.lower()}")
    stored = Image.open(io.BytesIO(clean.data))
    assert "icc_profile" not in stored.info and PROFILE_TEXT.encode("utf-16-be") not in clean.data
    red, _, blue = stored.getpixel((80, 60))
    assert blue > 200 > 60 > red, "the pixels were converted with the profile (its red is sRGB blue)"
    assert photos.check_clean_photo(clean.data, clean.format, "stored")[:2] == (160, 120)


def test_an_unreadable_icc_profile_is_dropped_and_the_pixels_kept(tmp_path: Path) -> None:
    png = write_image(tmp_path / "a.png", fmt="PNG", icc_profile=b"not a profile " + PROFILE_TEXT.encode())
    clean = clean_photo(png.read_bytes(), str(png))
    stored = Image.open(io.BytesIO(clean.data))
    assert "icc_profile" not in stored.info
    assert stored.tobytes() == Image.open(png).tobytes()


def test_an_archived_photo_with_a_profile_is_refused_unless_converted() -> None:
    source = io.BytesIO()
    noise_image((100, 100)).save(source, "PNG", icc_profile=tagged_profile())
    with pytest.raises(PhotoError, match="icc_profile"):
        photos.check_clean_photo(source.getvalue(), "png", "old.png")
    converted = photos.strip_profile(source.getvalue(), "png", "old.png")
    assert photos.check_clean_photo(converted, "png", "old.png")[:2] == (100, 100)
    assert photos.strip_profile(converted, "png", "new.png") is converted  # nothing to do: the same bytes


def test_a_huge_image_is_refused_from_its_header_in_bounded_memory(tmp_path: Path) -> None:
    """Issue #18: a 16-bit 8900x8900 PNG (0.5 MB on disk) took 1.3 GB to take in."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the peak memory of a process from /proc (Linux)")
    path = big_png(tmp_path / "huge.png", 8900, 8900)
    code = (
        "import sys; from pathlib import Path; from store.photos import clean_photo\n"
        "try: clean_photo(Path(sys.argv[1]).read_bytes(), 'huge.png')\n"
        "except Exception as exc: print(exc)\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True)
    message, peak_kb = result.stdout.splitlines()
    assert "8900x8900 pixels (RGB) would take 302 MB to decode, over the 192 MB limit" in message, result.stderr
    assert int(peak_kb) < 200_000, "refused from the header: no more memory than importing the store takes"


def test_a_jpeg_too_large_to_decode_whole_is_decoded_scaled_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(photos, "MAX_DECODED_BYTES", 400 * 300 * 4 - 1)  # a 400x300 colour photo is over
    jpeg = write_image(tmp_path / "big.jpg", size=(400, 300))
    clean = clean_photo(jpeg.read_bytes(), str(jpeg))
    assert (clean.width, clean.height) == (200, 150) == Image.open(io.BytesIO(clean.data)).size
    png = write_image(tmp_path / "big.png", size=(400, 300), fmt="PNG")
    with pytest.raises(PhotoError, match="would take 0 MB to decode"):
        clean_photo(png.read_bytes(), str(png))
    assert clean_photo(write_image(tmp_path / "ok.png", size=(300, 300), fmt="PNG").read_bytes(), "ok").width == 300
