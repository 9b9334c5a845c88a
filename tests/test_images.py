"""load_image (PNG/JPEG/DICOM, every failure mode) and the MedCLIP preprocess transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import xraygpt_lab
from xraygpt_lab import ImageLoadError
from xraygpt_lab.config import FULL, TINY
from xraygpt_lab.data.readers.images import MEDCLIP_MEAN, MEDCLIP_STD, load_image, preprocess

from fixtures_data import write_dicom, write_png

RAMP8 = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))  # [4, 16]


def test_package_reexports_load_image():
    assert xraygpt_lab.load_image is load_image


def test_png_8bit_gray(tmp_path):
    image = load_image(write_png(tmp_path / "a.png", RAMP8))
    assert image.dtype == np.float32 and image.shape == (4, 16)
    np.testing.assert_allclose(image, RAMP8 / 255.0, atol=1e-6)


def test_png_16bit(tmp_path):
    values = np.array([[0, 1000, 65535], [32768, 4095, 12]], dtype=np.uint16)
    image = load_image(write_png(tmp_path / "a16.png", values))
    np.testing.assert_allclose(image, values / 65535.0, atol=1e-6)


def test_rgb_rgba_palette_to_gray(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 0.299
    assert load_image(write_png(tmp_path / "rgb.png", rgb))[0, 0] == pytest.approx(76 / 255, abs=1e-6)
    rgba = np.full((2, 2, 4), 255, np.uint8)
    rgba[0, 0, 3] = 0  # transparent pixel composited over black (air)
    image = load_image(write_png(tmp_path / "rgba.png", rgba))
    assert image[0, 0] == 0.0 and image[1, 1] == pytest.approx(1.0)
    palette = Image.fromarray(RAMP8).convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_allclose(load_image(tmp_path / "p.png"), RAMP8 / 255.0, atol=1 / 255)


def test_jpeg(tmp_path):
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(load_image(tmp_path / "a.jpg") - 200 / 255).max() < 0.02


def test_jpeg_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((60, 40), dtype=np.uint8)  # [H, W]: tall, a white band at the top
    pixels[:10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (40, 60)  # shown wide, as a viewer shows it
    assert image[:, -10:].mean() > 0.9 and image[:, :-12].mean() < 0.1  # the band is now on the right


def _ramp16(bits: int = 12) -> np.ndarray:
    return np.linspace(0, 2**bits - 1, 64).reshape(8, 8).astype(np.uint16)  # [8, 8]


def test_dicom_monochrome2_min_max_and_rescale(tmp_path):
    pixels = _ramp16()
    plain = load_image(write_dicom(tmp_path / "m2.dcm", pixels))
    assert plain.min() == 0.0 and plain.max() == 1.0
    assert np.all(np.diff(plain.ravel()) >= 0)  # monotone: bright stays bright
    rescaled = load_image(write_dicom(tmp_path / "rs.dcm", pixels, slope=2.0, intercept=-1024.0))
    np.testing.assert_allclose(rescaled, plain, atol=1e-6)  # linear rescale then min-max


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = _ramp16()
    m2 = load_image(write_dicom(tmp_path / "m2.dcm", pixels))
    m1 = load_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == 1.0  # lowest stored value is white in MONOCHROME1


def test_dicom_window_center_width(tmp_path):
    pixels = np.array([[0, 1000, 1500, 2000, 4095]], dtype=np.uint16)
    image = load_image(write_dicom(tmp_path / "w.dcm", pixels, window=(1500.0, 1001.0)))
    # DICOM PS3.3 C.11.2.1.2.1 linear window: [1000, 2000] -> [0, 1], clipped outside
    np.testing.assert_allclose(image[0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-3)


def test_dicom_voi_lut_sequence_wins_over_min_max(tmp_path):
    pixels = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    lut = np.array([65535, 0, 65535, 32768])  # a non-monotone LUT only a LUT can produce
    image = load_image(write_dicom(tmp_path / "lut.dcm", pixels, bits_stored=16, voi_lut=lut))
    np.testing.assert_allclose(image[0], lut / 65535.0, atol=1e-6)


def test_dicom_16_bit_full_range(tmp_path):
    pixels = np.array([[0, 65535], [32768, 100]], dtype=np.uint16)
    image = load_image(write_dicom(tmp_path / "b16.dcm", pixels, bits_stored=16))
    np.testing.assert_allclose(image, pixels / 65535.0, atol=1e-6)


# ---------------------------------------------------------------------------- failures


def _assert_fails(path, reason: str, **kwargs):
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert path.name in message and reason in message, message
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    _assert_fails(tmp_path / "nope.png", "does not exist")


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_fails(tmp_path / "empty.png", "zero bytes")


def test_truncated_png(tmp_path):
    data = (write_png(tmp_path / "full.png", np.random.default_rng(0).integers(
        0, 255, (64, 64), dtype=np.uint8))).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _assert_fails(tmp_path / "cut.png", "truncated or corrupt")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("FINDINGS: this is text, not pixels")
    _assert_fails(tmp_path / "notes.png", "not an image")


def test_pixel_limit(tmp_path):
    write_png(tmp_path / "big.png", np.zeros((64, 64), np.uint8))
    _assert_fails(tmp_path / "big.png", "decompression bomb", max_pixels=1000)
    write_dicom(tmp_path / "big.dcm", np.zeros((64, 64), np.uint16))
    _assert_fails(tmp_path / "big.dcm", "decompression bomb", max_pixels=1000)


def test_unsupported_photometric(tmp_path):
    write_dicom(tmp_path / "hsv.dcm", _ramp16(), photometric="HSV")  # retired colour model
    _assert_fails(tmp_path / "hsv.dcm", "unsupported photometric interpretation")
    write_dicom(tmp_path / "pal.dcm", _ramp16(), photometric="PALETTE COLOR")  # no colour tables
    _assert_fails(tmp_path / "pal.dcm", "colour tables")


def test_dicom_palette_colour_reads_as_the_grey_of_its_table(tmp_path):
    """PALETTE COLOR (indices into red/green/blue tables, DICOM PS3.3 C.7.6.3.1.5): each index
    becomes the luma of its table entry, on the tables' 16-bit scale."""
    from pydicom.dataset import Dataset

    indices = (np.arange(64 * 48) % 256).reshape(64, 48).astype(np.uint16)
    path = write_dicom(tmp_path / "pal.dcm", indices, photometric="PALETTE COLOR", bits_stored=8)
    import pydicom

    ds: Dataset = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = indices.astype(np.uint8).tobytes()
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)  # grey table: dark → bright
    for k, scale in enumerate((1.0, 1.0, 0.5)):  # red, green, blue: (0028,110k) and (0028,120k)
        ds.add_new(0x00281101 + k, "US", [256, 0, 16])
        ds.add_new(0x00281201 + k, "OW", (ramp * scale).astype("<u2").tobytes())
    ds.save_as(path, enforce_file_format=True)
    image = load_image(path)
    expected = (ramp[indices] * (0.299 + 0.587 + 0.114 * 0.5)) / 65535.0
    np.testing.assert_allclose(image, expected, atol=2e-4)


def test_dicom_without_preamble_or_file_meta_is_read_as_a_bare_data_set(tmp_path):
    """Older archives write the data set alone (no 128-byte preamble, no ``DICM``, no file meta):
    a ``.dcm`` file of that kind reads as the same image; bytes that are no data set stay refused."""
    import pydicom

    pixels = _ramp16()
    full = write_dicom(tmp_path / "full.dcm", pixels)
    for implicit in (True, False):
        ds = pydicom.dcmread(full)
        del ds.file_meta
        ds.preamble = None
        bare = tmp_path / f"bare_{implicit}.dcm"
        ds.save_as(bare, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
        assert bare.read_bytes()[128:132] != b"DICM"
        np.testing.assert_array_equal(load_image(bare), load_image(full))
    ds = pydicom.dcmread(full)
    del ds.file_meta, ds.PixelData
    ds.preamble = None
    ds.save_as(tmp_path / "bare_nopix.dcm", implicit_vr=True, little_endian=True, enforce_file_format=False)
    _assert_fails(tmp_path / "bare_nopix.dcm", "no pixel data")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_fails(tmp_path / "noise.dcm", "not a DICOM file")


def test_dicom_without_pixels_and_corrupt_dicom(tmp_path):
    write_dicom(tmp_path / "nopix.dcm", _ramp16(), with_pixels=False)
    _assert_fails(tmp_path / "nopix.dcm", "no pixel data")
    good = write_dicom(tmp_path / "good.dcm", _ramp16()).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(good[:-40])
    _assert_fails(tmp_path / "cut.dcm", "corrupt")
    (tmp_path / "text.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 3)
    _assert_fails(tmp_path / "text.dcm", "DICOM")


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "folder.png").mkdir()
    _assert_fails(tmp_path / "folder.png", "not a regular file")


# ---------------------------------------------------------------------------- preprocess


@pytest.mark.parametrize("size", [TINY.image_size, FULL.image_size])
def test_preprocess_shape_and_normalisation(size):
    image = np.full((50, 80), MEDCLIP_MEAN, np.float32)
    x = preprocess(image, size)
    assert x.shape == (1, size, size) and x.dtype == torch.float32
    centre = x[0, size // 2 - 5: size // 2 + 5]
    assert centre.abs().max() < 1e-4  # the mean maps to 0
    # padding is black: rows above the content hold (0 - mean) / std
    assert x[0, 0].max().item() == pytest.approx(-MEDCLIP_MEAN / MEDCLIP_STD, abs=1e-5)


def test_preprocess_pads_wide_image_top_and_bottom():
    image = np.ones((20, 100), np.float32)  # wide white band -> padded above and below
    x = preprocess(image, 100) * MEDCLIP_STD + MEDCLIP_MEAN  # back to [0, 1]
    assert x[0, :35].max() < 0.05 and x[0, 65:].max() < 0.05
    assert x[0, 45:55].min() > 0.95
    tall = preprocess(image.T.copy(), 100) * MEDCLIP_STD + MEDCLIP_MEAN
    assert tall[0, :, :35].max() < 0.05 and tall[0, :, 45:55].min() > 0.95


def test_preprocess_matches_pillow_medclip_pipeline():
    """Same result as MedCLIP's Pillow steps (pad, bicubic resize, crop) up to 8-bit rounding."""
    rng = np.random.default_rng(0)
    image = (rng.random((60, 90)) ** 2).astype(np.float32)
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    square = Image.new("L", (90, 90), 0)
    square.paste(pil, (0, 15))
    reference = np.asarray(square.resize((64, 64), Image.BICUBIC), np.float32) / 255.0
    ours = (preprocess(image, 64) * MEDCLIP_STD + MEDCLIP_MEAN)[0].numpy()
    assert np.abs(ours - reference).mean() < 0.01
    assert np.abs(ours - reference).max() < 0.1


@pytest.mark.parametrize("bad, size, error", [
    (np.zeros((2, 2, 3), np.float32), 8, ValueError),
    (np.zeros((0, 5), np.float32), 8, ValueError),
    (np.zeros((4, 4), np.float32), 0, ValueError),
    (np.full((4, 4), np.nan, np.float32), 8, ValueError),
    ([[0.0, 1.0]], 8, TypeError),
])
def test_preprocess_rejects_bad_input(bad, size, error):
    with pytest.raises(error):
        preprocess(bad, size)


# ---------------------------------------------------------------------------- DICOM files as they come


def test_dicom_variants_read_as_the_same_image(tmp_path):
    """Deflated, no Transfer Syntax UID in the file meta, and the 128-byte preamble stripped (the
    file starts with ``DICM``): each is the image of the plain file."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    full = write_dicom(tmp_path / "full.dcm", _ramp16())
    expected = load_image(full)
    ds = pydicom.dcmread(full)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(full)
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(tmp_path / "no_syntax.dcm", enforce_file_format=False)
    (tmp_path / "no_preamble.dcm").write_bytes(full.read_bytes()[128:])
    for name in ("deflated.dcm", "no_syntax.dcm", "no_preamble.dcm"):
        np.testing.assert_array_equal(load_image(tmp_path / name), expected, err_msg=name)


def test_uncompressed_ybr_full_422_is_not_called_truncated():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_ybr_full_422_uncompressed.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's test file is not installed")
    image = load_image(path)
    assert image.shape == (100, 100) and 0.0 <= image.min() < image.max() <= 1.0


def _encapsulated(tmp_path, frames: list[bytes], name: str):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", _ramp16()))
    ds.compress(RLELossless)
    first = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([first] + frames)
    ds.NumberOfFrames = 1 + len(frames)
    ds.save_as(tmp_path / name, enforce_file_format=True)
    return tmp_path / name, first


def test_a_multi_frame_dicom_decodes_its_first_frame_only(tmp_path):
    """Only frame 0 is decoded: the later frames here are not even valid RLE, and a file of many
    large frames would otherwise need gigabytes."""
    path, first = _encapsulated(tmp_path, [b"\x00" * 64] * 20, "frames.dcm")
    np.testing.assert_allclose(load_image(path), load_image(tmp_path / "plain.dcm"), atol=1e-6)


def test_a_truncated_compressed_dicom_says_truncated_in_one_line(tmp_path, capfd):
    path, _ = _encapsulated(tmp_path, [], "whole.dcm")
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 10])  # inside the encapsulated pixel data
    _assert_fails(tmp_path / "cut.dcm", "truncated DICOM")
    assert "Warning" not in capfd.readouterr().err  # pydicom's own notes stay out of the terminal


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_float_tiff_is_refused(tmp_path, value):
    Image.fromarray(np.full((32, 32), value, dtype=np.float32)).save(tmp_path / "inf.tif")
    _assert_fails(tmp_path / "inf.tif", "NaN or infinite")


def test_an_image_beyond_pillows_own_limit_names_one_limit_and_its_size(tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # 4e8 pixels, a few kB on disk
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "huge.png")
    assert "400000000 pixels exceeds the limit of" in str(info.value) and "178956970" not in str(info.value)
