"""CIFAR-10-C style corruptions, the CIFAR-10-C and ImageNet-C loaders, and the corruption error measures (mCE)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from robust_mim import corruptions as C
from robust_mim.corruption_benchmark import (
    ALEXNET_ERRORS, alexnet_mce, corruption_errors, load_cifar10c, load_imagenet_c, mean_corruption_error,
    unnormalised_corruption_error,
)
from robust_mim.corruptions import CORRUPTION_NAMES, CORRUPTIONS, corrupt
from robust_mim.errors import ConfigError, DataMissingError

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform"}
# Pixel distance to the clean image is not monotone in severity for these (a property of the
# published tables, see the module docstring); each gets its own test below.
NOT_MSE_MONOTONE = {"glass_blur", "frost", "elastic_transform"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def natural() -> torch.Tensor:
    """Four natural photographs shipped with scikit-image, centre-cropped to 32x32: [4, 3, 32, 32]."""
    from skimage import data, transform

    images = []
    for load in (data.astronaut, data.coffee, data.chelsea, data.rocket):
        im = load().astype(np.float64) / 255
        h, w = im.shape[:2]
        s = min(h, w)
        im = im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        images.append(transform.resize(im, (32, 32), anti_aliasing=True))
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def _mse_by_severity(x: torch.Tensor, name: str, seeds=(0, 1)) -> np.ndarray:
    """Mean squared distance to x for severities 1..5, averaged over images and seeds: [5]."""
    return np.array([np.mean([((corrupt(x, name, s, seed) - x) ** 2).mean().item() for seed in seeds])
                     for s in range(1, 6)])


def test_registry_holds_the_15_benchmark_corruptions():
    assert len(CORRUPTION_NAMES) == 15
    assert CORRUPTIONS.names() == sorted(CORRUPTION_NAMES)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_shape_range_and_determinism(name, natural):
    for severity in (1, 3, 5):
        out = corrupt(natural, name, severity, seed=7)
        assert out.shape == natural.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, corrupt(natural, name, severity, seed=7))
    other_seed = corrupt(natural, name, 5, seed=8)
    assert torch.equal(other_seed, corrupt(natural, name, 5, seed=7)) == (name not in RANDOM)
    assert ((other_seed - natural) ** 2).mean() > 1e-5  # the corruption does something


@pytest.mark.parametrize("name", sorted(set(CORRUPTION_NAMES) - NOT_MSE_MONOTONE))
def test_severity_increases_distance_to_clean(name, natural):
    mse = _mse_by_severity(natural, name)
    # non-decreasing; motion_blur 3 -> 4 is equal up to rounding (same σ in the published table)
    assert np.all(np.diff(mse) >= -1e-7), mse
    assert mse[4] > 1.5 * mse[0], mse


def test_glass_blur_second_iteration_distorts_more(natural):
    """Severities 4-5 shuffle twice, 1-3 once; within each group more blur partly undoes the jitter."""
    mse = _mse_by_severity(natural, "glass_blur")
    assert min(mse[3], mse[4]) > 1.3 * max(mse[:3]), mse


def _decorrelation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean().item()


def test_frost_hides_more_of_the_image_with_severity(natural):
    """Frost trades image weight for frost weight, so its MSE can fall (3 -> 4); the
    correlation with the clean image falls monotonically (same texture for a seed)."""
    for seed in (0, 1):
        decor = [_decorrelation(natural, corrupt(natural, "frost", s, seed)) for s in range(1, 6)]
        assert np.all(np.diff(decor) > 0), decor


def test_frost_texture_is_seeded_and_in_range():
    a = C.frost_texture(3, 32, 32, np.random.default_rng(0))
    assert a.shape == (3, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, C.frost_texture(3, 32, 32, np.random.default_rng(0)))
    assert a.std() > 0.05  # a texture, not a flat veil


def test_elastic_non_affine_part_grows_with_severity(natural):
    """The published table shrinks the affine jitter and grows the elastic field: MSE falls,
    while the non-affine distortion of a linear ramp (affine maps keep it linear) grows."""
    assert np.all(np.diff(_mse_by_severity(natural, "elastic_transform")) < 0)
    n = 32
    r, c = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    ramp = (0.1 + 0.8 * (0.6 * r + 0.4 * c) / (n - 1)).expand(8, 3, n, n).contiguous()
    inner = (slice(8, -8), slice(8, -8))  # away from the reflected border
    design = torch.stack([r[inner].flatten(), c[inner].flatten(), torch.ones(16 * 16)], 1)  # [P, 3]

    def non_affine(img: torch.Tensor) -> float:
        z = img[:, 0][(slice(None),) + inner].flatten(1).T  # [P, N]
        fit = design @ torch.linalg.lstsq(design, z).solution
        return (fit - z).pow(2).mean().item()

    residual = [non_affine(corrupt(ramp, "elastic_transform", s, seed=3)) for s in range(1, 6)]
    assert residual[0] < 1e-10 and np.all(np.diff(residual) > 0), residual


@pytest.mark.parametrize("size", [(16, 16), (20, 28), (64, 64)])
def test_other_image_sizes(size):
    x = torch.rand(2, 3, 8, 8)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    for name in CORRUPTION_NAMES:
        out = corrupt(x, name, 5, seed=0)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1, name
        assert (out - x).abs().max() > 1e-3, name


# ----------------------------------------------------------------------------- fidelity to the published code


def _published_clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """make_cifar_c.py's clipped_zoom (scipy.ndimage.zoom, order 1) on [H, H]."""
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top:top + ch, top:top + ch], factor, order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim:trim + h, trim:trim + h]


@pytest.mark.parametrize("size,factor", [(32, 1.06), (32, 1.17), (32, 1.25), (32, 2.25), (17, 1.75)])
def test_clipped_zoom_matches_scipy_zoom(size, factor):
    img = np.random.default_rng(0).random((size, size))
    ours = C._clipped_zoom(torch.tensor(img, dtype=torch.float32)[None, None], factor)[0, 0].numpy()
    np.testing.assert_allclose(ours, _published_clipped_zoom(img, factor), atol=1e-5)


def test_zoom_blur_operator_is_mean_of_clipped_zooms():
    x = torch.rand(2, 3, 32, 32)
    factors = np.arange(1, 1.11, 0.01)
    expected = (x + sum(C._clipped_zoom(x, float(f)) for f in factors)) / (len(factors) + 1)
    torch.testing.assert_close(corrupt(x, "zoom_blur", 2), expected.clamp(0, 1), atol=1e-5, rtol=0)


def test_brightness_matches_hsv_round_trip(natural):
    from skimage.color import hsv2rgb, rgb2hsv

    img = natural.permute(0, 2, 3, 1).numpy().astype(np.float64)
    img[0, :4, :4] = 0  # black pixels have no hue
    hsv = rgb2hsv(img)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.15, 0, 1)
    expected = torch.tensor(hsv2rgb(hsv), dtype=torch.float32).permute(0, 3, 1, 2)
    out = corrupt(torch.tensor(img, dtype=torch.float32).permute(0, 3, 1, 2), "brightness", 3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("severity", [1, 4, 5])
def test_defocus_equals_direct_disk_correlation(natural, severity):
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = C._disk(radius, alias)
    assert abs(kernel.sum() - 1) < 1e-6
    img = natural.numpy()
    expected = ndimage.correlate(img, kernel[None, None], mode="mirror")
    np.testing.assert_allclose(corrupt(natural, "defocus_blur", severity).numpy(), np.clip(expected, 0, 1), atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
def test_gaussian_filter_matches_scipy(mode):
    x = torch.rand(2, 3, 12, 9)
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.3, 1.3), mode=mode, truncate=4.0)
    np.testing.assert_allclose(C._gaussian_filter(x, 1.3, mode, 4.0).numpy(), expected, atol=1e-5)


def test_pixelate_matches_pil_box_round_trip(natural):
    out = corrupt(natural, "pixelate", 5)
    for i, img in enumerate((natural.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)):
        small = Image.fromarray(img).resize((20, 20), Image.Resampling.BOX)  # int(32 * 0.65)
        ref = np.asarray(small.resize((32, 32), Image.Resampling.BOX), dtype=np.float32) / 255
        assert np.abs(out[i].permute(1, 2, 0).numpy() - ref).max() <= 2.5 / 255


def test_jpeg_matches_pil(natural):
    img = (natural[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=58)
    ref = torch.tensor(np.asarray(Image.open(buf)), dtype=torch.float32).permute(2, 0, 1) / 255
    torch.testing.assert_close(corrupt(natural[:1], "jpeg_compression", 3)[0], ref)


def test_motion_blur_is_a_one_sided_gaussian_line():
    """ImageMagick's kernel: weight exp(-i²/2σ²) on pixel i steps along the angle (angle 0: +x)."""
    x = torch.zeros(1, 1, 9, 21)
    x[0, 0, 4, 12] = 1.0
    out = C._motion_blur(x, radius=3, sigma=1.5, angles=np.array([0.0]))[0, 0]
    weights = np.exp(-np.arange(7) ** 2 / (2 * 1.5 ** 2))
    expected = np.zeros(21)
    expected[12 - np.arange(7)] = weights / weights.sum()  # out(c) = Σ_i k_i x(c + i)
    np.testing.assert_allclose(out[4].numpy(), expected, atol=1e-6)
    assert out[[0, 1, 2, 3, 5, 6, 7, 8]].abs().max() == 0


# ----------------------------------------------------------------------------- errors


def test_invalid_arguments_raise_config_error(natural):
    with pytest.raises(ConfigError, match="unknown corruption 'blur'"):
        corrupt(natural, "blur", 1)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="severity"):
            corrupt(natural, "fog", bad)
    with pytest.raises(ConfigError, match=r"\[N, 3, H, W\]"):
        corrupt(natural[:, :1], "fog", 1)


# ----------------------------------------------------------------------------- CIFAR-10-C files


def test_load_cifar10c_reads_the_severity_block(tmp_path):
    n = 4  # images per severity (10000 in the real files)
    images = np.zeros((5 * n, 32, 32, 3), dtype=np.uint8)
    for s in range(5):
        images[s * n:(s + 1) * n] = 10 * (s + 1)
    labels = np.arange(5 * n, dtype=np.uint8) % 10
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    x, y = load_cifar10c(tmp_path, "fog", 3)
    assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 30 / 255))
    assert y.dtype == torch.int64 and y.tolist() == labels[2 * n:3 * n].tolist()


def test_load_cifar10c_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(DataMissingError, match=r"snow\.npy.*zenodo\.org/record/2535967"):
        load_cifar10c(tmp_path, "snow", 1)
    np.save(tmp_path / "snow.npy", np.zeros((10, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataMissingError, match="labels.npy"):
        load_cifar10c(tmp_path, "snow", 1)
    np.save(tmp_path / "labels.npy", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DataMissingError, match="shape"):
        load_cifar10c(tmp_path, "snow", 1)
    with pytest.raises(ConfigError):
        load_cifar10c(tmp_path, "rain", 1)


# ----------------------------------------------------------------------------- ImageNet-C folders


def write_imagenet_c(root, names=("fog",), severities=(1,), classes=("n01", "n02"), per_class=3, size=8):
    """A tiny ImageNet-C tree <root>/<name>/<s>/<wnid>/<i>.png; pixel value = 10·(class + 1) + severity."""
    for name in names:
        for s in severities:
            for k, wnid in enumerate(classes):
                folder = root / name / str(s) / wnid
                folder.mkdir(parents=True)
                for i in range(per_class):
                    value = 10 * (k + 1) + int(s or 0)
                    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(folder / f"{wnid}_{i}.png")


def test_load_imagenet_c_takes_the_class_stratified_subset_with_the_clean_labels(tmp_path):
    """ImageNet-C folders are class-sorted like the validation split: n images = one class after another
    (not the first n of class 0), read unresized, labelled by the clean split's class order."""
    from torchvision.datasets import ImageFolder

    from robust_mim.data import evaluation_indices, load_dataset

    write_imagenet_c(tmp_path, severities=(1, 5))
    x, y = load_imagenet_c(tmp_path, "fog", 5, 2, ["n01", "n02"])
    assert x.shape == (2, 3, 8, 8) and sorted(y.tolist()) == [0, 1]
    assert torch.allclose(x[y == 1], torch.full_like(x[y == 1], 25 / 255))  # class n02 at severity 5
    clean = tmp_path / "clean"
    write_imagenet_c(clean, names=("test",), severities=("",))  # the same files as a clean test split clean/test/
    same = evaluation_indices(load_dataset("imagefolder", str(clean), "test", 8), 2)
    assert evaluation_indices(ImageFolder(str(tmp_path / "fog" / "5")), 2) == same
    x_all, _ = load_imagenet_c(tmp_path, "fog", 1, None, ["n01", "n02"])
    assert len(x_all) == 6


def test_load_imagenet_c_missing_or_mismatched_folders_are_one_line(tmp_path):
    with pytest.raises(DataMissingError, match=r"zenodo\.org/record/2235448"):
        load_imagenet_c(tmp_path, "fog", 1, 2, ["n01", "n02"])
    write_imagenet_c(tmp_path, classes=("n01",))
    with pytest.raises(DataMissingError, match="differ from the clean split"):
        load_imagenet_c(tmp_path, "fog", 1, 2, ["n01", "n02"])
    with pytest.raises(ConfigError):
        load_imagenet_c(tmp_path, "rain", 1, 2, ["n01"])


# ----------------------------------------------------------------------------- error measures


ERRORS = {"fog": {1: 0.1, 2: 0.2}, "snow": {1: 0.3, 2: 0.5}}
BASELINE = {"fog": {1: 0.2, 2: 0.4}, "snow": {1: 0.4, 2: 0.4}}


def test_mean_corruption_error_by_hand():
    # CE_fog = (.1 + .2) / (.2 + .4) = .5; CE_snow = (.3 + .5) / (.4 + .4) = 1.0
    assert corruption_errors(ERRORS, BASELINE) == pytest.approx({"fog": 0.5, "snow": 1.0})
    assert mean_corruption_error(ERRORS, BASELINE) == pytest.approx(0.75)
    # unnormalised: a plain error rate, mean over corruptions of the mean over severities (.15 + .4) / 2
    assert unnormalised_corruption_error(ERRORS) == pytest.approx(0.275)


def test_mean_corruption_error_accepts_json_keys_and_dataframes():
    as_json = {c: {str(s): e for s, e in per.items()} for c, per in ERRORS.items()}
    assert mean_corruption_error(as_json, BASELINE) == pytest.approx(0.75)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(ERRORS)  # columns = corruptions, index = severities
    assert mean_corruption_error(frame, pd.DataFrame(BASELINE)) == pytest.approx(0.75)


def test_mean_corruption_error_rejects_mismatched_baseline():
    with pytest.raises(ConfigError, match="snow"):
        mean_corruption_error(ERRORS, {"fog": BASELINE["fog"], "snow": {1: 0.4}})
    with pytest.raises(ConfigError):
        unnormalised_corruption_error({})


def test_alexnet_constants_are_the_published_imagenet_c_errors():
    """15 corruptions, as the ImageNet-C mCE spreadsheet (hendrycks/robustness) and easyrobust's get_ce_alexnet."""
    assert set(ALEXNET_ERRORS) == set(CORRUPTION_NAMES)
    assert ALEXNET_ERRORS["gaussian_noise"] == 0.886428 and ALEXNET_ERRORS["brightness"] == 0.564592
    assert ALEXNET_ERRORS["jpeg_compression"] == 0.606500 and all(0.5 < e < 1 for e in ALEXNET_ERRORS.values())


def test_alexnet_mce_is_the_official_imagenet_c_computation():
    """The official computation (easyrobust evaluate_imagenet_c): per corruption, top-1 accuracy (%) averaged over
    severities 1-5, CE = (100 - acc) / (100 · AlexNet's error), mCE = mean over the 15 corruptions."""
    rng = np.random.default_rng(0)
    errors = {c: {s: float(rng.uniform(0.1, 0.9)) for s in range(1, 6)} for c in CORRUPTION_NAMES}
    acc = {c: np.mean([100 * (1 - e) for e in per.values()]) for c, per in errors.items()}
    official = np.mean([(100 - acc[c]) / (ALEXNET_ERRORS[c] * 100) for c in CORRUPTION_NAMES])
    assert alexnet_mce(errors) == pytest.approx(official)
    alexnet_itself = {c: {s: ALEXNET_ERRORS[c] for s in range(1, 6)} for c in CORRUPTION_NAMES}
    assert alexnet_mce(alexnet_itself) == pytest.approx(1.0)  # AlexNet's mCE is 100 % by definition
    half = {c: {s: e / 2 for s, e in per.items()} for c, per in alexnet_itself.items()}
    assert alexnet_mce(half) == pytest.approx(0.5) and unnormalised_corruption_error(half) != pytest.approx(0.5)


def test_alexnet_mce_needs_every_corruption_at_every_severity():
    full = {c: {s: 0.5 for s in range(1, 6)} for c in CORRUPTION_NAMES}
    with pytest.raises(ConfigError, match="fog"):
        alexnet_mce({**full, "fog": {1: 0.5, 5: 0.5}})  # AlexNet's constants average severities 1-5
    with pytest.raises(ConfigError, match="snow"):
        alexnet_mce({c: per for c, per in full.items() if c != "snow"})
