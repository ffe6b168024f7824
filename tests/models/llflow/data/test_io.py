"""Image reading and writing: bit depths, colour modes with warnings, and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flowkit.models.llflow.data import ImageReadError, image_size, read_image, to_uint8, write_image

from .helpers import random_rgb, save_png_rgb16, save_rgb


def test_8bit_rgb_png_reads_exactly(tmp_path):
    pixels = random_rgb(np.random.default_rng(0), 5, 7)
    path = save_rgb(tmp_path / "a.png", pixels)
    as_uint8 = read_image(path, dtype=torch.uint8)
    as_float = read_image(path)
    assert as_uint8.shape == (3, 5, 7) and as_float.dtype == torch.float32
    assert np.array_equal(as_uint8.permute(1, 2, 0).numpy(), pixels)
    assert torch.equal(as_float, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    assert image_size(path) == (5, 7)


def test_jpeg_is_read_as_rgb(tmp_path):
    path = save_rgb(tmp_path / "a.jpg", np.full((8, 8, 3), 200, dtype=np.uint8))
    image = read_image(path)
    assert image.shape == (3, 8, 8) and abs(image.mean().item() - 200 / 255) < 2 / 255


def test_write_then_read_round_trip(tmp_path):
    image = torch.randint(0, 256, (3, 6, 4), dtype=torch.uint8)
    write_image(tmp_path / "deep" / "b.png", image)
    assert torch.equal(read_image(tmp_path / "deep" / "b.png", dtype=torch.uint8), image)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        write_image(tmp_path / "c.png", torch.zeros(4, 6, 4))


def test_16bit_grayscale_png_is_scaled_by_65535_and_warns(tmp_path):
    values = np.array([[0, 1, 256, 32768], [40000, 65534, 65535, 12345]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with pytest.warns(UserWarning, match=r"g16\.png.*grayscale"):
        image = read_image(path, dtype=torch.float64)
    expected = torch.from_numpy(values.astype(np.float64) / 65535)
    assert image.shape == (3, 2, 4)
    for channel in image:
        assert torch.allclose(channel, expected, rtol=0, atol=1e-15)
    with pytest.warns(UserWarning):
        as_uint8 = read_image(path, dtype=torch.uint8)
    assert torch.equal(as_uint8[0], torch.from_numpy(np.round(values / 65535 * 255).astype(np.uint8)))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_keeps_all_16_bits_through_every_row_filter(tmp_path, recwarn, channels):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (10, 9, channels)).astype(np.uint16)
    values[:, :4] = values[:, :1]  # flat runs, where filters predict well
    filters = np.arange(10) % 5  # rows with each filter type: none, sub, up, average, paeth
    path = save_png_rgb16(tmp_path / "rgb16.png", values, filters)
    image = read_image(path, dtype=torch.float64)
    assert torch.equal(image, torch.from_numpy(values[..., :3].astype(np.float64) / 65535).permute(2, 0, 1))
    # Pillow's own decoder undoes the filters too, keeping the high byte of each sample.
    with Image.open(path) as pillow:
        high_bytes = np.asarray(pillow.convert("RGB"))
    assert np.array_equal(high_bytes, (values[..., :3] >> 8).astype(np.uint8))
    messages = [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)]
    expected = [] if channels == 3 else [f"{path}: alpha channel (mode RGBA) dropped, converted to RGB"]
    assert messages == expected


def test_32bit_integer_images_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 100_000, dtype=np.int32), mode="I").save(tmp_path / "deep.tif")
    with pytest.raises(ImageReadError, match=r"deep\.tif.*0\.\.65535"), pytest.warns(UserWarning):
        read_image(tmp_path / "deep.tif")


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grayscale_is_converted_to_rgb_with_a_warning(tmp_path, mode):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = Image.fromarray(gray).convert(mode)
    image.save(tmp_path / "gray.png")
    with pytest.warns(UserWarning, match=r"gray\.png.*grayscale"):
        rgb = read_image(tmp_path / "gray.png", dtype=torch.uint8)
    for channel in rgb:
        assert np.array_equal(channel.numpy(), gray)


def test_rgba_drops_alpha_with_a_warning(tmp_path):
    rgba = np.random.default_rng(2).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match=r"rgba\.png.*alpha"):
        rgb = read_image(tmp_path / "rgba.png", dtype=torch.uint8)
    assert np.array_equal(rgb.permute(1, 2, 0).numpy(), rgba[..., :3])


def test_plain_rgb_does_not_warn(tmp_path, recwarn):
    read_image(save_rgb(tmp_path / "a.png", random_rgb(np.random.default_rng(3), 3, 3)))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_unreadable_files_raise_an_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    for call in (read_image, image_size):
        with pytest.raises(ImageReadError, match="garbage.png") as info:
            call(garbage)
        assert info.value.path == garbage
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_truncated_png_fails_on_decode_naming_the_file(tmp_path):
    path = save_rgb(tmp_path / "cut.png", random_rgb(np.random.default_rng(4), 64, 64))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert image_size(path) == (64, 64)  # the header alone is intact
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(path)


def test_decompression_bomb_limit_is_enforced(tmp_path, monkeypatch):
    path = save_rgb(tmp_path / "big.png", np.zeros((40, 40, 3), dtype=np.uint8))
    # Pillow refuses images over twice MAX_IMAGE_PIXELS; lower it rather than write a huge file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageReadError, match="big.png"):
        read_image(path)


def test_to_uint8_truncate_matches_numpy_astype_and_round_is_exact_on_8bit_values():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.random(10_000, dtype=np.float32), np.arange(256, dtype=np.float32) / 255])
    values = np.concatenate([values, np.array([-0.5, 1.5], dtype=np.float32)])
    reference = (np.clip(values, 0, 1) * np.float32(255)).astype(np.uint8)
    assert np.array_equal(to_uint8(torch.from_numpy(values), rounding="truncate").numpy(), reference)
    levels = torch.arange(256, dtype=torch.float32) / 255
    assert torch.equal(to_uint8(levels), torch.arange(256).to(torch.uint8))
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(levels, rounding="floor")


def test_a_failed_write_keeps_the_earlier_file_and_names_the_target(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    first = torch.zeros(3, 4, 4, dtype=torch.uint8)
    write_image(path, first)

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("flowkit.models.llflow._files.os.replace", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: '.*out.png'") as error:
        write_image(path, torch.ones(3, 4, 4))
    assert error.value.filename == str(path) and error.value.strerror == "No space left on device"
    monkeypatch.undo()
    assert torch.equal(read_image(path, dtype=torch.uint8), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "out.unknown", first)
