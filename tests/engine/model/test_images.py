"""Reading user images and converting them to and from pixel tensors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import ExifTags, Image

from engine.errors import ImageError
from engine.model.images import open_image, to_pil, to_pixel_values

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
DOG = Path("/work/shared/data/dreambooth/dog/00.jpg")


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def close_to(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but which carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored rotated: display needs 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    halves(40, 20).save(path, "JPEG", exif=exif, quality=95)
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.size == (20, 40)
    assert close_to(image.getpixel((10, 5)), RED)  # the left half is now on top
    assert close_to(image.getpixel((10, 35)), BLUE)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (0, 255, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 32))
    rgba.paste((0, 0, 255, 128), (16, 16, 32, 32))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    image = open_image(buffer.getvalue())
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == RED
    assert image.getpixel((24, 4)) == WHITE  # fully transparent green -> white
    assert close_to(image.getpixel((24, 24)), (127, 127, 255), tolerance=1)  # half-transparent blue


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 10, 20))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    opened = open_image(buffer.getvalue())
    assert opened.getpixel((2, 2)) == RED and opened.getpixel((15, 2)) == WHITE


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "nope.jpg")


def test_text_file_named_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 20)
    with pytest.raises(ImageError, match="not an image"):
        open_image(path)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    noise = Image.frombytes("RGB", (64, 64), torch.randint(0, 256, (64 * 64 * 3,), dtype=torch.uint8).numpy())
    noise.save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        open_image(path)


@pytest.mark.parametrize("side", [100_000, 9_500, 9_000])  # PIL error, PIL warning, our own cap
def test_decompression_bomb_is_refused(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(path)


def test_tiny_image_is_refused() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (15, 200)).save(buffer, "PNG")
    with pytest.raises(ImageError, match="at least 16"):
        open_image(buffer.getvalue())


def _rgb(pixels: torch.Tensor, row: int, col: int) -> tuple[int, ...]:
    return tuple(int(v) for v in ((pixels[:, row, col] + 1) * 127.5).round())


def test_crop_keeps_the_centre_and_pad_adds_white_bars() -> None:
    image = halves(200, 100)
    crop, pad = to_pixel_values([image], 32, fit="crop")[0], to_pixel_values([image], 32, fit="pad")[0]
    assert crop.shape == pad.shape == (3, 32, 32)
    # crop: the centre 100x100 square, half red half blue, no white anywhere.
    assert close_to(_rgb(crop, 2, 4), RED) and close_to(_rgb(crop, 29, 27), BLUE)
    assert not (crop > 0.9).all(dim=0).any()
    # pad: the full width kept, white bars above and below (100 of 200 rows -> rows 8..23 of 32).
    for row in (0, 5, 26, 31):
        assert close_to(_rgb(pad, row, 4), WHITE) and close_to(_rgb(pad, row, 27), WHITE)
    assert close_to(_rgb(pad, 16, 4), RED) and close_to(_rgb(pad, 16, 27), BLUE)


def test_pixel_values_range_and_exact_round_trip() -> None:
    image = Image.frombytes("RGB", (24, 24), bytes(range(256)) * 6 + bytes(range(192)))
    pixels = to_pixel_values([image, image.convert("L")], 24)
    assert pixels.shape == (2, 3, 24, 24) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[0].min() == -1 and pixels[0].max() == 1
    back = to_pil(pixels)
    assert back[0].tobytes() == image.tobytes()
    assert back[1].tobytes() == image.convert("L").convert("RGB").tobytes()


def test_to_pil_clamps() -> None:
    pixels = torch.tensor([-3.0, 2.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    (image,) = to_pil(pixels)
    assert image.mode == "RGB" and image.size == (2, 2)
    assert image.getpixel((0, 0)) == (0, 255, 128)


@pytest.mark.skipif(not DOG.is_file(), reason=f"sample photo {DOG} not present")
def test_real_photo() -> None:
    image = open_image(DOG)
    assert image.mode == "RGB" and min(image.size) >= 16
    pixels = to_pixel_values([image], 64)
    assert pixels.shape == (1, 3, 64, 64)
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels.std() > 0.05


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_heic_photo_without_pillow_heif_says_how_to_install_it(tmp_path: Path, as_bytes: bool) -> None:
    from engine.model.images import heif_available

    if heif_available():
        pytest.skip("pillow-heif is installed: this checks the message shown without it")
    data = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"is a HEIC photo; .* pip install 'familiar\[heic\]'"):
        open_image(data if as_bytes else path)
    path.write_bytes(b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 64)  # another ISO container: no HEIC hint
    with pytest.raises(ImageError, match="not an image in a format Familiar can read"):
        open_image(path)
