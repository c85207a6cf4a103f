"""Known-answer tests for onnxviz.imaging: exact values, layouts, encodings and failure modes."""

from __future__ import annotations

import base64
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxviz import imaging as im
from onnxviz.errors import InputError, ReportError


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance Y (Rec. 709 primaries) of sRGB colours."""
    return _srgb_to_linear(rgb) @ np.array([0.2126, 0.7152, 0.0722])


def _png_chunk_types(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, types = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as pil:
        return np.asarray(pil)


# ------------------------------------------------------------------------------------------
# colormaps


@pytest.mark.parametrize(
    ("name", "low", "mid", "high"),
    [
        ("viridis", (68, 1, 84), (33, 145, 140), (253, 231, 37)),
        ("inferno", (0, 0, 4), (186, 54, 85), (252, 255, 164)),
        ("bwr", (5, 48, 97), (255, 255, 255), (103, 0, 31)),
    ],
)
def test_colormap_endpoints_and_midpoint(name: str, low, mid, high) -> None:
    cmap = im.get_colormap(name)
    out = cmap(np.array([0.0, 0.5, 1.0]))
    assert out.shape == (3, 3) and out.dtype == np.float64
    np.testing.assert_array_equal(im.to_uint8(out), np.array([low, mid, high], dtype=np.uint8))
    np.testing.assert_allclose(out * 255, np.array([low, mid, high]), atol=1e-9)


def test_diverging_centre_is_exactly_white() -> None:
    np.testing.assert_allclose(im.get_colormap("bwr")(0.5), [1.0, 1.0, 1.0], atol=1e-12)


def test_colormap_interpolates_in_linear_rgb() -> None:
    # viridis control colours 0 and 1/8 are #440154 and #472d7b; 1/16 lies halfway.
    c0 = np.array([0x44, 0x01, 0x54]) / 255
    c1 = np.array([0x47, 0x2D, 0x7B]) / 255
    expected = _linear_to_srgb((_srgb_to_linear(c0) + _srgb_to_linear(c1)) / 2)
    np.testing.assert_allclose(im.get_colormap("viridis")(1 / 16), expected, atol=1e-12)
    # ... which is not the sRGB-space midpoint (the whole point of interpolating in linear RGB)
    assert np.abs(expected - (c0 + c1) / 2).max() > 1e-3


@pytest.mark.parametrize("name", ["viridis", "inferno"])
def test_sequential_colormaps_increase_in_luminance(name: str) -> None:
    y = _luminance(im.get_colormap(name)(np.linspace(0, 1, 257)))
    assert np.all(np.diff(y) > 0)
    assert im.get_colormap(name).kind == "sequential"


def test_diverging_colormap_is_brightest_at_zero_and_dark_at_both_ends() -> None:
    cmap = im.get_colormap("bwr")
    assert cmap.kind == "diverging"
    y = _luminance(cmap(np.linspace(0, 1, 201)))
    assert np.argmax(y) == 100
    assert np.all(np.diff(y[:101]) > 0) and np.all(np.diff(y[100:]) < 0)
    lo, hi = cmap(0.0), cmap(1.0)
    assert lo[2] > lo[0]  # blue end
    assert hi[0] > hi[2]  # red end


def test_colormap_clips_out_of_range_keeps_shape_and_refuses_nan() -> None:
    cmap = im.get_colormap("viridis")
    vals = np.array([[-3.0, 0.0], [1.0, 7.0]])
    out = cmap(vals)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], out[0, 1])
    np.testing.assert_array_equal(out[1, 0], out[1, 1])
    with pytest.raises(InputError):
        cmap(np.array([0.5, np.nan]))


def test_get_colormap_unknown_name_and_read_only_table() -> None:
    with pytest.raises(InputError) as exc:
        im.get_colormap("jet")
    assert exc.value.hint is not None and "viridis" in exc.value.hint
    assert set(im.COLORMAPS) == {"viridis", "inferno", "bwr"}
    with pytest.raises(TypeError):
        im.COLORMAPS["jet"] = im.get_colormap("viridis")  # type: ignore[index]


def test_custom_colormap_and_validation() -> None:
    grey = im.Colormap("grey", "sequential", (0.0, 1.0), ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    # halfway in linear light is 0.5 linear, i.e. sRGB ~0.735, not 0.5
    np.testing.assert_allclose(grey(0.5), _linear_to_srgb(np.full(3, 0.5)), atol=1e-12)
    with pytest.raises(InputError):
        im.Colormap("bad", "sequential", (0.0, 0.7), ((0, 0, 0), (1, 1, 1)))
    with pytest.raises(InputError):
        im.Colormap("bad", "sequential", (0.0, 0.6, 0.4, 1.0), ((0, 0, 0),) * 4)
    with pytest.raises(InputError):
        im.Colormap("bad", "sequential", (0.0, 1.0), ((0, 0, 0), (1, 2, 1)))
    with pytest.raises(InputError):
        im.Colormap("bad", "cyclic", (0.0, 1.0), ((0, 0, 0), (1, 1, 1)))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# scale_map / heatmap / overlay


def test_scale_map_non_negative_divides_by_percentile_and_clips() -> None:
    m = np.arange(101, dtype=np.float64)  # the p-th percentile is exactly p
    out = im.scale_map(m, signed=False, clip_percentile=99.0)
    np.testing.assert_allclose(out[:100], m[:100] / 99.0, rtol=0, atol=1e-15)
    assert out[99] == 1.0 and out[100] == 1.0
    out50 = im.scale_map(m, signed=False, clip_percentile=50.0)
    assert out50[25] == 0.5 and np.all(out50[50:] == 1.0)


def test_scale_map_non_negative_drops_negative_part() -> None:
    out = im.scale_map(np.array([[-5.0, 0.0, 2.0, 4.0]]), signed=False, clip_percentile=100.0)
    np.testing.assert_array_equal(out, [[0.0, 0.0, 0.5, 1.0]])


def test_scale_map_signed_uses_abs_percentile_and_keeps_sign() -> None:
    m = np.array([-4.0, -2.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(
        im.scale_map(m, signed=True, clip_percentile=100.0), [-1.0, -0.5, 0.0, 0.25, 0.5]
    )
    # |m| = [4, 2, 0, 1, 2], median 2
    np.testing.assert_array_equal(
        im.scale_map(m, signed=True, clip_percentile=50.0), [-1.0, -1.0, 0.0, 0.5, 1.0]
    )


@pytest.mark.parametrize("signed", [False, True])
def test_scale_map_zero_and_constant_maps_have_no_nan(signed: bool) -> None:
    zero = im.scale_map(np.zeros((4, 5)), signed=signed)
    np.testing.assert_array_equal(zero, np.zeros((4, 5)))
    const = im.scale_map(np.full((4, 5), 3.0), signed=signed)
    np.testing.assert_array_equal(const, np.ones((4, 5)))
    neg = im.scale_map(np.full((3, 3), -2.0), signed=signed)
    np.testing.assert_array_equal(neg, np.full((3, 3), -1.0 if signed else 0.0))


def test_scale_map_sparse_map_falls_back_to_max() -> None:
    m = np.zeros(1000)
    m[0] = 8.0
    m[1] = 2.0  # 99th percentile is 0: the max is used instead of dividing by zero
    np.testing.assert_array_equal(im.scale_map(m, signed=False)[:3], [1.0, 0.25, 0.0])


def test_scale_map_rejects_bad_percentile_and_non_finite() -> None:
    for p in (0.0, -1.0, 100.5):
        with pytest.raises(InputError):
            im.scale_map(np.ones(3), signed=False, clip_percentile=p)
    with pytest.raises(InputError):
        im.scale_map(np.array([1.0, np.inf]), signed=True)


def test_heatmap_autodetects_sign_and_picks_default_colormaps() -> None:
    viridis, bwr = im.get_colormap("viridis"), im.get_colormap("bwr")
    pos = np.array([[0.0, 1.0], [2.0, 4.0]])
    np.testing.assert_allclose(im.heatmap(pos, clip_percentile=100.0), viridis(pos / 4.0))
    signed = np.array([[-4.0, 0.0], [2.0, 4.0]])
    out = im.heatmap(signed, clip_percentile=100.0)
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[0, 1], [1.0, 1.0, 1.0], atol=1e-12)  # zero -> white
    np.testing.assert_allclose(out[0, 0], bwr(0.0))
    np.testing.assert_allclose(out[1, 0], bwr(0.75))
    np.testing.assert_allclose(out[1, 1], bwr(1.0))
    # forcing signed on a non-negative map puts 0 at the centre of the diverging map
    forced = im.heatmap(pos, signed=True, clip_percentile=100.0)
    np.testing.assert_allclose(forced[0, 0], [1.0, 1.0, 1.0], atol=1e-12)


def test_heatmap_accepts_colormap_by_name_or_object() -> None:
    m = np.array([[0.0, 1.0]])
    inferno = im.get_colormap("inferno")
    np.testing.assert_array_equal(im.heatmap(m, cmap="inferno"), im.heatmap(m, cmap=inferno))
    np.testing.assert_allclose(im.heatmap(m, cmap="inferno")[0, 1], inferno(1.0))
    with pytest.raises(InputError):
        im.heatmap(np.zeros((2, 2, 1)))


def test_heatmap_of_zero_map_has_no_nan() -> None:
    out = im.heatmap(np.zeros((3, 3)))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.broadcast_to(im.get_colormap("viridis")(0.0), (3, 3, 3)))


def test_overlay_alpha_endpoints_and_default() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((6, 5, 3))
    m = rng.standard_normal((6, 5))
    np.testing.assert_array_equal(im.overlay(image, m, alpha=0.0), image)
    np.testing.assert_array_equal(im.overlay(image, m, alpha=1.0), im.heatmap(m))
    np.testing.assert_allclose(im.overlay(image, m), 0.5 * image + 0.5 * im.heatmap(m))


def test_overlay_grey_image_and_resized_map() -> None:
    grey = np.linspace(0, 1, 16).reshape(4, 4)
    m = np.array([[0.0, 1.0], [2.0, 3.0]])
    out = im.overlay(grey, m, alpha=0.0)
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))
    expected = im.heatmap(im.resize(m, (4, 4)))
    np.testing.assert_allclose(im.overlay(grey, m, alpha=1.0), expected)


def test_overlay_decides_sign_before_resizing() -> None:
    # Downsampling averages the single negative pixel away; the map is still signed.
    m = np.ones((4, 4))
    m[0, 0] = -1.0
    out = im.overlay(np.zeros((1, 1)), m, alpha=1.0)
    ref = im.heatmap(im.resize(m, (1, 1)), signed=True)
    np.testing.assert_allclose(out, ref)


def test_overlay_rejects_bad_alpha_and_rgba() -> None:
    with pytest.raises(InputError):
        im.overlay(np.zeros((2, 2)), np.zeros((2, 2)), alpha=1.5)
    with pytest.raises(InputError):
        im.overlay(np.zeros((2, 2, 4)), np.zeros((2, 2)))


# ------------------------------------------------------------------------------------------
# resize / upscale / tile_grid


def test_resize_bilinear_half_pixel_known_values() -> None:
    out = im.resize(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])
    out2 = im.resize(np.array([[0.0], [1.0]]), (4, 3))
    np.testing.assert_allclose(out2, np.repeat([[0.0], [0.25], [0.75], [1.0]], 3, axis=1))


def test_resize_identity_rgb_and_nearest() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((3, 4, 3))
    np.testing.assert_allclose(im.resize(img, (3, 4)), img, atol=1e-15)
    assert im.resize(img, (7, 2)).shape == (7, 2, 3)
    np.testing.assert_array_equal(
        im.resize(img, (9, 12), method="nearest"), im.upscale_nearest(img, 3)
    )
    # nearest downsampling by 2 picks the second pixel of each pair (centre 1.5 -> index 1)
    np.testing.assert_array_equal(
        im.resize(np.arange(4.0)[None, :], (1, 2), method="nearest"), [[1.0, 3.0]]
    )
    with pytest.raises(InputError):
        im.resize(img, (0, 3))
    with pytest.raises(InputError):
        im.resize(img, (3, 3), method="bicubic")  # type: ignore[arg-type]


def test_upscale_nearest_gives_crisp_blocks() -> None:
    k = np.arange(25.0).reshape(5, 5)
    up = im.upscale_nearest(k, 4)
    assert up.shape == (20, 20)
    for i in range(5):
        for j in range(5):
            assert np.all(up[4 * i : 4 * i + 4, 4 * j : 4 * j + 4] == k[i, j])
    with pytest.raises(InputError):
        im.upscale_nearest(k, 0)


def test_tile_grid_near_square_layout_and_padding_positions() -> None:
    tiles = [np.full((2, 3), float(k) / 10) for k in range(5)]
    grid = im.tile_grid(tiles, pad=1, pad_value=0.9)
    # 5 tiles -> 3 columns, 2 rows; 1-pixel gaps between tiles, no outer border
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2)
    for k in range(5):
        r, c = divmod(k, 3)
        y, x = r * 3, c * 4
        assert np.all(grid[y : y + 2, x : x + 3] == k / 10)
    assert np.all(grid[2, :] == 0.9)  # horizontal gap
    assert np.all(grid[:, 3] == 0.9) and np.all(grid[:, 7] == 0.9)  # vertical gaps
    assert np.all(grid[3:5, 8:11] == 0.9)  # empty sixth cell


def test_tile_grid_ncols_rgb_and_no_padding() -> None:
    tiles = [np.full((1, 1, 3), [k, 0.0, 1.0 - k]) for k in (0.0, 0.5, 1.0)]
    grid = im.tile_grid(tiles, ncols=1, pad=2, pad_value=0.0)
    assert grid.shape == (1 + 2 + 1 + 2 + 1, 1, 3)
    np.testing.assert_array_equal(grid[[0, 3, 6], 0], [[0, 0, 1], [0.5, 0, 0.5], [1, 0, 0]])
    np.testing.assert_array_equal(grid[[1, 2, 4, 5], 0], np.zeros((4, 3)))
    flat = im.tile_grid([np.eye(2), np.ones((2, 2))], pad=0)
    np.testing.assert_array_equal(flat, [[1, 0, 1, 1], [0, 1, 1, 1]])
    assert im.tile_grid([np.zeros((2, 2))] * 4).shape == (5, 5)
    assert im.tile_grid([np.zeros((2, 2))] * 2, ncols=9).shape == (2, 5)


def test_tile_grid_rejects_empty_and_mixed_shapes() -> None:
    with pytest.raises(InputError):
        im.tile_grid([])
    with pytest.raises(InputError):
        im.tile_grid([np.zeros((2, 2)), np.zeros((2, 2, 3))])
    with pytest.raises(InputError):
        im.tile_grid([np.zeros((2, 2))], ncols=0)


# ------------------------------------------------------------------------------------------
# kernels and feature maps


def test_kernel_image_grey_maps_zero_to_mid_grey_and_extremes_to_0_and_1() -> None:
    w = np.array([[[0.0, 2.0, -1.0], [-2.0, 1.0, 0.0]]])  # (C=1, 2, 3)
    img = im.kernel_image(w)
    assert img.shape == (2, 3)
    np.testing.assert_array_equal(img, [[0.5, 1.0, 0.25], [0.0, 0.75, 0.5]])


def test_kernel_image_rgb_puts_channels_last() -> None:
    w = np.zeros((3, 2, 2))
    w[0, 0, 0] = 4.0  # red, top-left
    w[2, 1, 1] = -4.0  # blue, bottom-right
    img = im.kernel_image(w)
    assert img.shape == (2, 2, 3)
    np.testing.assert_array_equal(img[0, 0], [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(img[1, 1], [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(img[0, 1], [0.5, 0.5, 0.5])


def test_kernel_image_other_channel_counts_tile_the_slices_on_one_scale() -> None:
    w = np.zeros((4, 2, 2))
    w[0, 0, 0] = 2.0
    w[3, 1, 1] = -1.0
    img = im.kernel_image(w)
    assert img.shape == (5, 5)  # 2x2 grid of 2x2 slices, 1-pixel gaps
    assert img[0, 0] == 1.0 and img[4, 4] == 0.25
    assert img[0, 3] == 0.5  # slice 1 is all zero -> grey
    assert img[2, 0] == 1.0  # gap


def test_kernel_image_shared_scale_zero_kernel_and_validation() -> None:
    w = np.array([[[1.0, -1.0]]])
    np.testing.assert_array_equal(im.kernel_image(w, scale=4.0), [[0.625, 0.375]])
    np.testing.assert_array_equal(im.kernel_image(w, scale=0.5), [[1.0, 0.0]])  # clipped
    np.testing.assert_array_equal(im.kernel_image(np.zeros((1, 3, 3))), np.full((3, 3), 0.5))
    with pytest.raises(InputError):
        im.kernel_image(np.zeros((3, 3)))
    with pytest.raises(InputError):
        im.kernel_image(w, scale=-1.0)


def test_kernel_images_per_filter_versus_shared_scale() -> None:
    weights = np.zeros((2, 1, 1, 2))
    weights[0, 0, 0] = [4.0, -4.0]
    weights[1, 0, 0] = [1.0, 0.0]
    per = im.kernel_images(weights, per_filter=True)
    shared = im.kernel_images(weights, per_filter=False)
    np.testing.assert_array_equal(per[1], [[1.0, 0.5]])
    np.testing.assert_array_equal(shared[1], [[0.625, 0.5]])
    np.testing.assert_array_equal(per[0], shared[0])


def test_feature_map_image_min_max_percentile_and_colormap() -> None:
    fm = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_array_equal(im.feature_map_image(fm), [[0.0, 0.25], [0.5, 1.0]])
    ramp = np.arange(101.0).reshape(1, 101)  # percentiles 1 and 99 are 1 and 99
    scaled = im.feature_map_image(ramp, clip_percentile=99.0)
    assert scaled[0, 0] == 0.0 and scaled[0, 1] == 0.0 and scaled[0, 99] == 1.0
    assert scaled[0, 50] == pytest.approx(49 / 98, abs=1e-15)
    rgb = im.feature_map_image(fm, cmap="viridis")
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_allclose(rgb[1, 1], im.get_colormap("viridis")(1.0))


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_feature_map_image_constant_maps_give_zeros(value: float) -> None:
    for p in (None, 99.0):
        out = im.feature_map_image(np.full((3, 4), value), clip_percentile=p)
        np.testing.assert_array_equal(out, np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------
# encoding and files


def test_to_uint8_clips_and_rounds() -> None:
    img = np.array([[0.0, 0.5, 1.0], [-1.0, 2.0, 0.002]])
    np.testing.assert_array_equal(im.to_uint8(img), [[0, 128, 255], [0, 255, 1]])
    u8 = np.array([[1, 2]], dtype=np.uint8)
    out = im.to_uint8(u8)
    np.testing.assert_array_equal(out, u8)
    assert out is not u8
    with pytest.raises(InputError):
        im.to_uint8(np.array([[1, 2]], dtype=np.int64))
    with pytest.raises(InputError):
        im.to_uint8(np.array([[np.nan]]))


@pytest.mark.parametrize(
    ("shape", "mode"), [((5, 7), "L"), ((5, 7, 1), "L"), ((5, 7, 3), "RGB"), ((5, 7, 4), "RGBA")]
)
def test_png_round_trip_through_pillow(shape: tuple[int, ...], mode: str) -> None:
    img = np.random.default_rng(2).random(shape)
    data = im.png_bytes(img)
    with Image.open(io.BytesIO(data)) as pil:
        assert pil.mode == mode and pil.size == (7, 5)
        back = np.asarray(pil)
    np.testing.assert_array_equal(back, im.to_uint8(img).reshape(back.shape))


def test_png_bytes_deterministic_and_without_metadata() -> None:
    img = np.random.default_rng(3).random((8, 9, 3))
    a = im.png_bytes(img)
    assert a == im.png_bytes(img.copy())
    assert a == im.png_bytes(np.asfortranarray(img))  # memory layout does not matter
    types = _png_chunk_types(a)
    assert types[0] == b"IHDR" and types[-1] == b"IEND"
    assert set(types) == {b"IHDR", b"IDAT", b"IEND"}


def test_png_bytes_rejects_bad_shapes() -> None:
    for shape in [(3,), (2, 2, 2), (0, 3), (2, 2, 3, 1)]:
        with pytest.raises(InputError):
            im.png_bytes(np.zeros(shape))


def test_data_uri_decodes_to_the_png() -> None:
    img = np.random.default_rng(4).random((4, 6))
    uri = im.data_uri(img)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    raw = base64.b64decode(uri[len(prefix) :], validate=True)
    assert raw == im.png_bytes(img)
    np.testing.assert_array_equal(_decode_png(raw), im.to_uint8(img))


def test_save_png_writes_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    img = np.random.default_rng(5).random((3, 4, 3))
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    im.save_png(img, target)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    assert target.read_bytes() == im.png_bytes(img)
    im.save_png(img, str(tmp_path / "second.png"))  # str paths too
    assert sorted(os.listdir(tmp_path)) == ["out.png", "second.png"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_save_png_failure_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(im.os, failing, boom)
    new = tmp_path / "new.png"
    with pytest.raises(ReportError) as exc:
        im.save_png(np.zeros((2, 2)), new)
    assert isinstance(exc.value.__cause__, OSError)
    assert os.listdir(tmp_path) == []

    existing = tmp_path / "existing.png"
    existing.write_bytes(b"previous content")
    with pytest.raises(ReportError):
        im.save_png(np.zeros((2, 2)), existing)
    assert existing.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["existing.png"]


def test_save_png_missing_directory_and_bad_image(tmp_path: Path) -> None:
    with pytest.raises(ReportError):
        im.save_png(np.zeros((2, 2)), tmp_path / "nope" / "x.png")
    with pytest.raises(InputError):  # encoding fails before anything touches the disk
        im.save_png(np.array([[np.nan]]), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------
# purity


def test_functions_do_not_modify_their_inputs() -> None:
    rng = np.random.default_rng(6)
    image = rng.random((4, 4, 3))
    m = rng.standard_normal((2, 2))
    w = rng.standard_normal((2, 3, 3, 3))
    before = [a.copy() for a in (image, m, w)]
    im.overlay(image, m)
    im.heatmap(m)
    im.scale_map(m, signed=True)
    im.feature_map_image(m, clip_percentile=90.0)
    im.kernel_images(w, per_filter=False)
    im.tile_grid([image, image])
    im.resize(image, (8, 8))
    im.png_bytes(image)
    for a, b in zip((image, m, w), before):
        np.testing.assert_array_equal(a, b)
