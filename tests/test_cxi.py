"""CXI 1.6 files: round trips, the sign of the translation, files from other programs."""

import h5py
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import janssen.io as jio

PLANCK_C = 6.62607015e-34 * 299792458.0  # J m
DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"


def make_data(key, *, npos=5, shape=(8, 6), with_mask=True):
    rng = np.random.default_rng(np.asarray(jr.key_data(key)))
    counts = rng.poisson(20.0, (npos, *shape)).astype(np.float32)
    positions = rng.uniform(-1e-6, 1e-6, (npos, 2)).astype(np.float32)
    bad = jnp.zeros(shape, bool).at[1, 2].set(True).at[4, 0].set(True) if with_mask else None
    return jio.MicroscopeData(counts, positions, 1.3e-10, jnp.array([75e-6, 55e-6]), 2.5, bad)


def write_foreign(
    path,
    data,
    *,
    wavelength=True,
    energy=False,
    mask=False,
    data_at=DETECTOR + "/data",
    translation_at=TRANSLATION,
    skip=(),
):
    """A CXI file as another program might write it (plain datasets, optional fields)."""
    fields = {
        data_at: np.asarray(data.intensities),
        translation_at: np.column_stack([-np.asarray(data.positions, np.float64), np.zeros(data.num_positions)]),
        DETECTOR + "/distance": float(data.distance),
        DETECTOR + "/x_pixel_size": float(data.camera_pixel_size[0]),
        DETECTOR + "/y_pixel_size": float(data.camera_pixel_size[1]),
    }
    if wavelength:
        fields[SOURCE + "/wavelength"] = float(data.wavelength)
    if energy:
        fields[SOURCE + "/energy"] = PLANCK_C / float(data.wavelength)
    if mask:
        fields[DETECTOR + "/mask"] = np.asarray(data.bad_pixels).astype(np.uint32) * 8  # "dead" bit
    with h5py.File(path, "w") as handle:
        for name, value in fields.items():
            if name not in skip:
                handle.create_dataset(name, data=value)


def assert_same_data(a, b):
    for name in ("intensities", "positions", "wavelength", "camera_pixel_size", "distance", "bad_pixels"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_round_trip_is_exact(tmp_path, getkey):
    data = make_data(getkey())
    jio.write_cxi(tmp_path / "a.cxi", data)
    assert_same_data(jio.read_cxi(tmp_path / "a.cxi"), data)
    assert jio.read_ground_truth(tmp_path / "a.cxi") is None


def test_layout_and_translation_sign(tmp_path, getkey):
    data = make_data(getkey())
    path = tmp_path / "a.cxi"
    jio.write_cxi(path, data)
    with h5py.File(path, "r") as handle:
        assert int(handle["cxi_version"][()]) == 160
        translation = handle[TRANSLATION][()]
        # CXI stores the sample's translation: minus the beam position on the sample.
        np.testing.assert_array_equal(translation[:, :2], -np.asarray(data.positions, np.float64))
        np.testing.assert_array_equal(translation[:, 2], 0.0)
        link = handle["entry_1/data_1"].get("data", getlink=True)
        assert isinstance(link, h5py.SoftLink) and link.path == "/" + DETECTOR + "/data"
        np.testing.assert_array_equal(handle["entry_1/data_1/data"][()], np.asarray(data.intensities))
        mask = handle[DETECTOR + "/mask"][()]
        assert mask.dtype == np.uint32
        np.testing.assert_array_equal(mask != 0, np.asarray(data.bad_pixels))
        # E = h c / lambda, to double precision.
        np.testing.assert_allclose(handle[SOURCE + "/energy"][()] * float(data.wavelength), PLANCK_C, rtol=1e-12)
        assert handle[DETECTOR + "/x_pixel_size"][()] == np.float32(75e-6)
        assert handle[DETECTOR + "/y_pixel_size"][()] == np.float32(55e-6)


@pytest.mark.parametrize("wavelength, energy", [(True, False), (False, True), (True, True)])
def test_wavelength_or_energy(tmp_path, getkey, wavelength, energy):
    data = make_data(getkey())
    write_foreign(tmp_path / "f.cxi", data, wavelength=wavelength, energy=energy)
    read = jio.read_cxi(tmp_path / "f.cxi")
    # h c / E in float64 then rounded to float32: within one float32 ulp.
    np.testing.assert_allclose(float(read.wavelength), float(data.wavelength), rtol=1e-7)


def test_optional_fields_absent(tmp_path, getkey):
    data = make_data(getkey())
    # No mask, no data_1 group, frames only under the detector.
    write_foreign(tmp_path / "f.cxi", data)
    read = jio.read_cxi(tmp_path / "f.cxi")
    assert not np.any(np.asarray(read.bad_pixels))
    np.testing.assert_array_equal(np.asarray(read.intensities), np.asarray(data.intensities))
    np.testing.assert_array_equal(np.asarray(read.positions), np.asarray(data.positions))


def test_alternative_locations_and_mask_bits(tmp_path, getkey):
    data = make_data(getkey())
    write_foreign(
        tmp_path / "f.cxi", data, mask=True, data_at="entry_1/data_1/data", translation_at="entry_1/data_1/translation"
    )
    read = jio.read_cxi(tmp_path / "f.cxi")
    np.testing.assert_array_equal(np.asarray(read.bad_pixels), np.asarray(data.bad_pixels))
    np.testing.assert_array_equal(np.asarray(read.intensities), np.asarray(data.intensities))
    np.testing.assert_array_equal(np.asarray(read.positions), np.asarray(data.positions))


@pytest.mark.parametrize(
    "skip, named",
    [
        ((DETECTOR + "/distance",), "/entry_1/instrument_1/detector_1/distance"),
        ((DETECTOR + "/x_pixel_size",), "/entry_1/instrument_1/detector_1/x_pixel_size"),
        ((DETECTOR + "/y_pixel_size",), "/entry_1/instrument_1/detector_1/y_pixel_size"),
        ((DETECTOR + "/data",), "/entry_1/data_1/data' or '/entry_1/instrument_1/detector_1/data"),
        ((TRANSLATION,), "/entry_1/sample_1/geometry_1/translation"),
        ((SOURCE + "/wavelength",), "/entry_1/instrument_1/source_1/energy"),
    ],
)
def test_missing_required_field_names_the_hdf5_path(tmp_path, getkey, skip, named):
    data = make_data(getkey())
    write_foreign(tmp_path / "f.cxi", data, skip=skip)
    with pytest.raises(jio.CXIError, match="f.cxi") as info:
        jio.read_cxi(tmp_path / "f.cxi")
    assert named in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_frames_shape(tmp_path):
    with h5py.File(tmp_path / "f.cxi", "w") as handle:
        handle.create_dataset(DETECTOR + "/data", data=np.zeros((8, 6)))
    with pytest.raises(jio.CXIError, match=r"shape \(N, H, W\), got shape \(8, 6\)"):
        jio.read_cxi(tmp_path / "f.cxi")


def test_missing_or_foreign_file(tmp_path):
    with pytest.raises(jio.CXIError, match="nowhere.cxi' does not exist"):
        jio.read_cxi(tmp_path / "nowhere.cxi")
    (tmp_path / "text.cxi").write_text("not HDF5")
    with pytest.raises(jio.CXIError, match="text.cxi' is not a readable HDF5 file"):
        jio.read_cxi(tmp_path / "text.cxi")


def test_invalid_values_are_reported_with_the_file(tmp_path, getkey):
    data = make_data(getkey())
    write_foreign(tmp_path / "f.cxi", data)
    with h5py.File(tmp_path / "f.cxi", "a") as handle:
        handle[DETECTOR + "/distance"][()] = -1.0
    with pytest.raises(jio.CXIError, match="f.cxi.*`distance` must be finite and positive"):
        jio.read_cxi(tmp_path / "f.cxi")


def test_ground_truth_group(tmp_path, getkey):
    data = make_data(getkey(), shape=(8, 8), with_mask=False)
    obj = jnp.exp(1j * jr.uniform(getkey(), (20, 24)))
    probe = jr.normal(getkey(), (2, 8, 8)) + 0j
    truth = jio.SimulatedDataset(data, obj, probe, data.positions)
    path = tmp_path / "t.cxi"
    jio.write_cxi(path, data, ground_truth=truth)
    read = jio.read_ground_truth(path)
    assert isinstance(read, jio.SimulatedDataset)
    assert_same_data(read.data, data)
    for name in ("object", "probe", "positions"):
        assert np.array_equal(np.asarray(getattr(read, name)), np.asarray(getattr(truth, name))), name
    with h5py.File(path, "r") as handle:
        assert handle["ground_truth/probe"].shape == (2, 8, 8)
        np.testing.assert_array_equal(handle["ground_truth/positions"][()], np.asarray(data.positions))


def test_ground_truth_must_match(tmp_path, getkey):
    data = make_data(getkey(), shape=(8, 8))
    other = make_data(getkey(), npos=3, shape=(8, 8))
    truth = jio.SimulatedDataset(
        other, jnp.ones((20, 20), jnp.complex64), jnp.ones((8, 8), jnp.complex64), other.positions
    )
    with pytest.raises(ValueError, match="`ground_truth` must match `data`"):
        jio.write_cxi(tmp_path / "t.cxi", data, ground_truth=truth)


def test_unwritable_path(tmp_path, getkey):
    with pytest.raises(OSError, match="cannot create CXI file"):
        jio.write_cxi(tmp_path / "no" / "such" / "dir.cxi", make_data(getkey()))
