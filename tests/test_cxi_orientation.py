"""CXI detector orientation, other programs' conventions, and unit sanity before allocation.

The datasets are made by a tiny NumPy simulator (no JAX compilation): 16 frames of
24 x 20 pixels with different pitches along x and y, so that a transpose that forgot to
swap the pitches, or a flip about the wrong pixel, changes the data read back.
"""

import h5py
import numpy as np
import pytest

import janssen.io as jio
from janssen.cli import main

PLANCK_C = 6.62607015e-34 * 299792458.0  # J m
ELECTRON_VOLT = 1.602176634e-19  # J
DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
FRAME = (24, 20)  # (H, W): even sizes, where a plain flip would move the centre pixel
PITCH = (75e-6, 55e-6)  # camera pixel (x, y), m


def _scan_and_object(rng, object_pixel):
    positions = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2) * 3.0 - 4.5
    positions = (positions + rng.uniform(-0.3, 0.3, positions.shape)) * object_pixel  # (x, y), m
    obj = np.exp(1j * rng.uniform(0, 1, (40, 36))) * rng.uniform(0.6, 1.0, (40, 36))
    y, x = np.mgrid[: FRAME[0], : FRAME[1]]
    probe = np.exp(-((x - FRAME[1] // 2 - 1) ** 2 + (y - FRAME[0] // 2) ** 2) / 30) * np.exp(0.3j * x)
    return positions, obj, probe


def _exit_waves(positions, obj, probe, object_pixel):
    corners = np.round(positions / object_pixel).astype(int) + np.array(obj.shape[::-1]) // 2
    corners -= np.array(FRAME[::-1]) // 2
    return np.stack([probe * obj[r : r + FRAME[0], c : c + FRAME[1]] for c, r in corners])


def far_field_data():
    """Far-field frames |FFT(P O)|^2 with Poisson noise, centred; object pixel lambda z / (N dx)."""
    rng = np.random.default_rng(0)
    wavelength, distance = 1e-10, 1.0
    object_pixel = wavelength * distance / (np.array(FRAME[::-1]) * np.array(PITCH))
    positions, obj, probe = _scan_and_object(rng, object_pixel)
    waves = _exit_waves(positions, obj, probe, object_pixel)
    far = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(waves, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    counts = rng.poisson(2000.0 * np.abs(far) ** 2).astype(np.float32)
    bad = np.zeros(FRAME, bool)
    bad[1, 2] = bad[FRAME[0] // 2, FRAME[1] - 3] = True  # asymmetric: a wrong flip moves them
    return jio.MicroscopeData(counts, positions.astype(np.float32), wavelength, PITCH, distance, bad)


def near_field_data():
    """Near-field (Fresnel) frames with Poisson noise; the object pixel is the detector pixel."""
    rng = np.random.default_rng(1)
    wavelength, distance, pixel = 1e-10, 0.05, np.array([1e-6, 1.2e-6])
    positions, obj, probe = _scan_and_object(rng, pixel)
    waves = _exit_waves(positions, obj, probe, pixel)
    fy = np.fft.fftfreq(FRAME[0], pixel[1])[:, None]
    fx = np.fft.fftfreq(FRAME[1], pixel[0])[None, :]
    kernel = np.exp(-1j * np.pi * wavelength * distance * (fx**2 + fy**2))
    near = np.fft.ifft2(np.fft.fft2(waves) * kernel)
    counts = rng.poisson(500.0 * np.abs(near) ** 2).astype(np.float32)
    bad = np.zeros(FRAME, bool)
    bad[3, 1] = True
    return jio.MicroscopeData(counts, positions.astype(np.float32), wavelength, pixel, distance, bad)


DATASETS = {"far": far_field_data(), "near": near_field_data()}


def assert_same_data(a, b):
    for name in ("intensities", "positions", "wavelength", "camera_pixel_size", "distance", "bad_pixels"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


def rewrite(path, name, value):
    """Replace (or with `value=None` delete) one dataset of a CXI file."""
    with h5py.File(path, "r+") as handle:
        if name in handle:
            del handle[name]
        if value is not None:
            handle.create_dataset(name, data=value)


# ---- the eight orientations ---------------------------------------------------------------


def test_eight_distinct_orientations():
    assert len(set(jio.DETECTOR_ORIENTATIONS)) == 8
    assert jio.DETECTOR_ORIENTATIONS[0] == ("+y", "+x")


@pytest.mark.parametrize("field", ["far", "near"])
@pytest.mark.parametrize("axes", jio.DETECTOR_ORIENTATIONS)
def test_every_orientation_reads_back_identically(tmp_path, field, axes):
    data = DATASETS[field]
    jio.write_cxi(tmp_path / "o.cxi", data, detector_axes=axes)
    assert_same_data(jio.read_cxi(tmp_path / "o.cxi"), data)


@pytest.mark.parametrize("axes", jio.DETECTOR_ORIENTATIONS)
def test_stored_pixels_sit_where_the_basis_vectors_say(tmp_path, axes):
    """Independent of the re-indexing code: each stored pixel, placed in the lab frame by
    `corner_position + (r + 1/2) slow + (c + 1/2) fast`, holds janssen's pixel at that place
    (janssen's pixel (r', c') lies at x = (c' - W // 2) dx, y = (r' - H // 2) dy)."""
    data = DATASETS["far"]
    jio.write_cxi(tmp_path / "o.cxi", data, detector_axes=axes)
    with h5py.File(tmp_path / "o.cxi", "r") as handle:
        stored = handle[DETECTOR + "/data"][()]
        slow, fast = handle[DETECTOR + "/basis_vectors"][()]
        corner = handle[DETECTOR + "/corner_position"][()]
        assert handle[DETECTOR + "/x_pixel_size"][()] == np.linalg.norm(fast)
        assert handle[DETECTOR + "/y_pixel_size"][()] == np.linalg.norm(slow)
        np.testing.assert_allclose(corner[2], float(data.distance), rtol=1e-12)
    transposed = axes[0][1] == "x"
    assert stored.shape[1:] == (FRAME[::-1] if transposed else FRAME)
    r, c = np.mgrid[: stored.shape[1], : stored.shape[2]]
    lab = corner[:, None, None] + (r + 0.5) * slow[:, None, None] + (c + 0.5) * fast[:, None, None]
    assert np.all(lab[2] == corner[2])  # the detector plane is normal to the beam
    pitch = np.asarray(data.camera_pixel_size, np.float64)
    column = (np.round(lab[0] / pitch[0]).astype(int) + FRAME[1] // 2) % FRAME[1]
    row = (np.round(lab[1] / pitch[1]).astype(int) + FRAME[0] // 2) % FRAME[0]
    np.testing.assert_array_equal(stored, np.asarray(data.intensities)[:, row, column])
    # The beam (lab x = y = 0) falls on the stored frames' centre pixel in every orientation.
    centre = lab[:2, stored.shape[1] // 2, stored.shape[2] // 2]
    np.testing.assert_allclose(centre, 0.0, atol=1e-12)


def test_default_write_is_janssens_frame_with_explicit_basis(tmp_path):
    data = DATASETS["far"]
    jio.write_cxi(tmp_path / "o.cxi", data)
    with h5py.File(tmp_path / "o.cxi", "r") as handle:
        np.testing.assert_array_equal(handle[DETECTOR + "/data"][()], np.asarray(data.intensities))
        basis = handle[DETECTOR + "/basis_vectors"][()]
    assert basis.shape == (2, 3)  # canonical: rows = slow (row) vector, fast (column) vector
    px, py = (float(v) for v in np.float32(PITCH))  # MicroscopeData holds float32
    np.testing.assert_array_equal(basis, [[0.0, py, 0.0], [px, 0.0, 0.0]])


def test_unknown_orientation_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"`detector_axes` must be one of .* got \('\+y', '\+y'\)"):
        jio.write_cxi(tmp_path / "o.cxi", DATASETS["far"], detector_axes=("+y", "+y"))


def test_basis_stored_per_frame_and_corner_at_pixel_centre_are_accepted(tmp_path):
    data = DATASETS["near"]
    path = tmp_path / "o.cxi"
    jio.write_cxi(path, data, detector_axes=("-x", "+y"))
    with h5py.File(path, "r") as handle:
        basis = handle[DETECTOR + "/basis_vectors"][()]
        corner = handle[DETECTOR + "/corner_position"][()]
    rewrite(path, DETECTOR + "/basis_vectors", np.repeat(basis[None], data.num_positions, axis=0))
    # Some programs write the first pixel's centre, half a pixel in from its corner.
    rewrite(path, DETECTOR + "/corner_position", corner + 0.5 * basis[0] + 0.5 * basis[1])
    assert_same_data(jio.read_cxi(path), data)


def test_pitch_from_basis_and_distance_from_corner_when_absent(tmp_path):
    data = DATASETS["far"]
    path = tmp_path / "o.cxi"
    jio.write_cxi(path, data, detector_axes=("+x", "-y"))
    for name in ("x_pixel_size", "y_pixel_size", "distance"):
        rewrite(path, f"{DETECTOR}/{name}", None)
    read = jio.read_cxi(path)
    np.testing.assert_array_equal(np.asarray(read.camera_pixel_size), np.asarray(data.camera_pixel_size))
    np.testing.assert_allclose(float(read.distance), float(data.distance), rtol=1e-7)
    np.testing.assert_array_equal(np.asarray(read.intensities), np.asarray(data.intensities))


# ---- files following other programs' conventions ---------------------------------------------


def flip_about_centre(array, axis):
    n = array.shape[axis]
    return np.take(array, (2 * (n // 2) - np.arange(n)) % n, axis=axis)


def test_cdtools_convention(tmp_path):
    """CDTools (cdtools/tools/data/data.py): basis_vectors stored (3, 2), one vector per column,
    by default rows along -y and columns along -x; x_pixel_size = |fast|, y_pixel_size = |slow|;
    the translation is the sample's (CDTools negates it on reading); float32 source values."""
    data = DATASETS["near"]
    px, py = (float(v) for v in np.asarray(data.camera_pixel_size, np.float64))
    frames = flip_about_centre(flip_about_centre(np.asarray(data.intensities), 1), 2)
    with h5py.File(tmp_path / "cdtools.cxi", "w") as handle:
        handle["cxi_version"] = 160
        handle.create_dataset(DETECTOR + "/basis_vectors", data=np.array([[0, -py, 0], [-px, 0, 0]]).T)
        handle[DETECTOR + "/x_pixel_size"] = px
        handle[DETECTOR + "/y_pixel_size"] = py
        handle[DETECTOR + "/distance"] = np.float32(data.distance)
        handle[SOURCE + "/wavelength"] = np.float32(data.wavelength)
        handle[SOURCE + "/energy"] = np.float32(PLANCK_C / float(data.wavelength))
        handle.create_dataset("entry_1/data_1/data", data=frames)
        translation = np.column_stack([-np.asarray(data.positions, np.float64), np.zeros(data.num_positions)])
        handle.create_dataset("entry_1/data_1/translation", data=translation)
    read = jio.read_cxi(tmp_path / "cdtools.cxi")
    for name in ("intensities", "positions", "wavelength", "camera_pixel_size"):
        np.testing.assert_array_equal(np.asarray(getattr(read, name)), np.asarray(getattr(data, name)), name)
    np.testing.assert_allclose(float(read.distance), float(data.distance), rtol=1e-7)


def test_ptychodus_convention(tmp_path):
    """ptychodus (src/ptychodus/plugins/cxi_file.py): no basis_vectors or corner_position,
    energy only (J), and the translation is the probe position itself (not negated), in a
    file that carries the /entry_1/ptychodus group."""
    data = DATASETS["far"]
    with h5py.File(tmp_path / "ptychodus.cxi", "w") as handle:
        handle["cxi_version"] = 160
        handle.create_dataset(DETECTOR + "/data", data=np.asarray(data.intensities))
        handle["entry_1/data_1/data"] = h5py.SoftLink("/" + DETECTOR + "/data")
        handle[DETECTOR + "/distance"] = float(data.distance)
        handle[DETECTOR + "/x_pixel_size"] = float(data.camera_pixel_size[0])
        handle[DETECTOR + "/y_pixel_size"] = float(data.camera_pixel_size[1])
        handle[SOURCE + "/energy"] = PLANCK_C / float(data.wavelength)
        translation = np.column_stack([np.asarray(data.positions, np.float64), np.zeros(data.num_positions)])
        handle.create_dataset(TRANSLATION, data=translation)
        handle.create_group("entry_1/ptychodus")
    read = jio.read_cxi(tmp_path / "ptychodus.cxi")
    np.testing.assert_array_equal(np.asarray(read.positions), np.asarray(data.positions))
    np.testing.assert_array_equal(np.asarray(read.intensities), np.asarray(data.intensities))
    np.testing.assert_allclose(float(read.wavelength), float(data.wavelength), rtol=1e-7)


def test_ptypy_style_energy_in_kev_is_refused(tmp_path):
    """PtyPy's parameters (ptypy/core/data.py, ptypy/experiment/*) take the energy in keV;
    the same number written into a CXI file's energy (J) is refused, naming the path."""
    data = DATASETS["far"]
    path = tmp_path / "ptypy.cxi"
    jio.write_cxi(path, data)
    rewrite(path, SOURCE + "/wavelength", None)
    rewrite(path, SOURCE + "/energy", PLANCK_C / float(data.wavelength) / ELECTRON_VOLT / 1e3)
    with pytest.raises(jio.CXIError, match=r"'/entry_1/instrument_1/source_1/energy'.*joules.*looks like keV"):
        jio.read_cxi(path)


# ---- contradictory metadata ------------------------------------------------------------------


def _tilted(vector, degrees, into):
    angle = np.deg2rad(degrees)
    return np.cos(angle) * vector + np.sin(angle) * np.linalg.norm(vector) * np.asarray(into, float)


CONTRADICTIONS = {
    "pixel size vs basis": (
        lambda b, c, d: {DETECTOR + "/x_pixel_size": np.linalg.norm(b[1]) * 1.01},
        r"'/entry_1/instrument_1/detector_1/x_pixel_size' contradicts .*basis_vectors.*expected 7\.5e-05 m .*got",
    ),
    "basis not axis-aligned": (
        lambda b, c, d: {DETECTOR + "/basis_vectors": np.stack([b[0], _tilted(b[1], 1.0, [0, 1, 0])])},
        r"fast \(column\) vector of '/entry_1/instrument_1/detector_1/basis_vectors' must lie along the lab x or y",
    ),
    "basis tilts the detector": (
        lambda b, c, d: {DETECTOR + "/basis_vectors": np.stack([_tilted(b[0], 2.0, [0, 0, 1]), b[1]])},
        r"slow \(row\) vector of '/entry_1/.*/basis_vectors' has a z component.*expected \(x, y, 0\), got",
    ),
    "both along x": (
        lambda b, c, d: {DETECTOR + "/basis_vectors": np.stack([b[1], b[1]])},
        r"'/entry_1/instrument_1/detector_1/basis_vectors' must have its slow .* got both along x",
    ),
    "zero length": (
        lambda b, c, d: {DETECTOR + "/basis_vectors": np.stack([b[0], 0 * b[1]])},
        r"fast \(column\) vector of '/entry_1/instrument_1/detector_1/basis_vectors' must have a length.*got 0",
    ),
    "basis shape": (
        lambda b, c, d: {DETECTOR + "/basis_vectors": np.eye(3)},
        r"'/entry_1/instrument_1/detector_1/basis_vectors' must hold two .* got shape \(3, 3\)",
    ),
    "basis changes per frame": (
        lambda b, c, d: {DETECTOR + "/basis_vectors": np.stack([b, b[::-1]] * 8)},
        r"'/entry_1/instrument_1/detector_1/basis_vectors' changes from frame to frame.*expected 16 equal",
    ),
    "beam off centre": (
        lambda b, c, d: {DETECTOR + "/corner_position": c + 3 * b[1]},
        r"'/entry_1/instrument_1/detector_1/corner_position' puts the beam off the centre pixel.*expected x, y = .*got",
    ),
    "corner z vs distance": (
        lambda b, c, d: {DETECTOR + "/corner_position": c + np.array([0, 0, 0.1 * d])},
        r"z of dataset '/entry_1/instrument_1/detector_1/corner_position' contradicts .*distance'.*expected 1 m",
    ),
    "tilted sample": (
        lambda b, c, d: {"entry_1/sample_1/geometry_1/orientation": [1.0, 0, 0, 0, np.cos(0.3), np.sin(0.3)]},
        r"'/entry_1/sample_1/geometry_1/orientation' tilts the sample plane.*expected a normal along z",
    ),
}


@pytest.mark.parametrize("case", CONTRADICTIONS)
def test_contradictory_metadata_is_refused_naming_the_path(tmp_path, case):
    change, message = CONTRADICTIONS[case]
    path = tmp_path / "bad.cxi"
    jio.write_cxi(path, DATASETS["far"], detector_axes=("-y", "+x"))
    with h5py.File(path, "r") as handle:
        basis = handle[DETECTOR + "/basis_vectors"][()]
        corner = handle[DETECTOR + "/corner_position"][()]
    for name, value in change(basis, corner, float(DATASETS["far"].distance)).items():
        rewrite(path, name, value)
    with pytest.raises(jio.CXIError, match=message):
        jio.read_cxi(path)


# ---- unit slips at read time -------------------------------------------------------------------


def _slips(data):
    energy = PLANCK_C / float(data.wavelength)
    translation = np.column_stack([-np.asarray(data.positions, np.float64), np.zeros(data.num_positions)])
    return {
        "energy in eV": ({SOURCE + "/energy": energy / ELECTRON_VOLT}, SOURCE + "/energy", "looks like eV"),
        "energy in keV": ({SOURCE + "/energy": energy / ELECTRON_VOLT / 1e3}, SOURCE + "/energy", "looks like keV"),
        "wavelength in nm": ({SOURCE + "/wavelength": float(data.wavelength) * 1e9}, SOURCE + "/wavelength", "nanom"),
        "translations in um": ({TRANSLATION: translation * 1e6}, TRANSLATION, "micrometres"),
        "pixel in mm": ({DETECTOR + "/x_pixel_size": PITCH[0] * 1e3}, DETECTOR + "/x_pixel_size", "millimetres"),
        "distance in mm": ({DETECTOR + "/distance": float(data.distance) * 1e3}, DETECTOR + "/distance", "millim"),
    }


SLIPS = _slips(DATASETS["far"])


def write_slip(path, case):
    data = DATASETS["far"]
    jio.write_cxi(path, data)
    fields, _, _ = SLIPS[case]
    if SOURCE + "/energy" in fields:
        rewrite(path, SOURCE + "/wavelength", None)  # the energy is then what sets the wavelength
    if DETECTOR + "/x_pixel_size" in fields:
        for name in ("basis_vectors", "corner_position"):
            rewrite(path, f"{DETECTOR}/{name}", None)
    for name, value in fields.items():
        rewrite(path, name, value)


@pytest.mark.parametrize("case", SLIPS)
def test_unit_slip_is_refused_at_read_time(tmp_path, case):
    write_slip(tmp_path / "slip.cxi", case)
    _, name, unit = SLIPS[case]
    with pytest.raises(jio.CXIError, match=unit) as info:
        jio.read_cxi(tmp_path / "slip.cxi")
    assert f"'/{name}'" in str(info.value)


CLI_SLIPS = ["energy in eV", "energy in keV", "wavelength in nm", "translations in um", "pixel in mm"]


@pytest.mark.parametrize("case", CLI_SLIPS)
def test_cli_refuses_unit_slip_in_one_line(tmp_path, capsys, case):
    write_slip(tmp_path / "slip.cxi", case)
    assert main(["reconstruct", str(tmp_path / "slip.cxi"), "--iterations", "1", "--out", str(tmp_path / "r.h5")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("janssen reconstruct: error:") and SLIPS[case][1] in captured.err
    assert not (tmp_path / "r.h5").exists()


def test_cli_refuses_translations_in_mm_before_allocating(tmp_path, capsys):
    """Translations in mm pass the read-time bound (a scan of a few cm is possible) but not the grid bound."""
    data = DATASETS["far"]
    path = tmp_path / "mm.cxi"
    jio.write_cxi(path, data)
    # A 13 um wide scan (20 times the simulated one) written in mm reads as 1.3 cm.
    translation = np.column_stack([-np.asarray(data.positions, np.float64) * 20e3, np.zeros(data.num_positions)])
    rewrite(path, TRANSLATION, translation)
    assert main(["reconstruct", str(path), "--iterations", "1", "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "`positions` span" in err and "over `max_pixels`" in err and "mm.cxi" in err


# ---- check_geometry -------------------------------------------------------------------------------


def _with(data, **changes):
    fields = {name: getattr(data, name) for name in ("intensities", "positions", "wavelength", "distance")}
    fields |= {"camera_pixel_size": data.camera_pixel_size, "bad_pixels": data.bad_pixels} | changes
    return jio.MicroscopeData(**fields)


def test_check_geometry_predicts_the_grid():
    data = DATASETS["far"]
    grid = jio.check_geometry(data)
    pixel = float(data.wavelength) * float(data.distance) / (np.array(FRAME[::-1]) * np.asarray(data.camera_pixel_size))
    np.testing.assert_allclose(grid.pixel_size, pixel, rtol=1e-6)
    span = np.ptp(np.asarray(data.positions, np.float64), axis=0) / np.asarray(grid.pixel_size)
    # As janssen.optics.object_shape_for: span + probe window + 2 * padding (min(24, 20) // 8 = 2 px) + 2, even.
    expected = [int(np.ceil(span[1])) + FRAME[0] + 2 * 2 + 2, int(np.ceil(span[0])) + FRAME[1] + 2 * 2 + 2]
    assert grid.shape == tuple(e + e % 2 for e in expected)
    assert grid.nbytes == grid.shape[0] * grid.shape[1] * 8
    # Raster step 3 object pixels, jittered by at most 0.3 px on each axis.
    assert 3 - 0.6 * np.sqrt(2) <= grid.median_step_px <= 3 + 0.6 * np.sqrt(2)
    near = jio.check_geometry(DATASETS["near"], object_pixel_size=DATASETS["near"].camera_pixel_size)
    np.testing.assert_allclose(near.pixel_size, [1e-6, 1.2e-6], rtol=1e-6)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"wavelength": 0.1}, r"`wavelength` is 0\.1 m, over 0\.001 m: it looks like nanometres"),
        ({"wavelength": PLANCK_C / 8000.0}, r"`wavelength` is .* under 1e-13 m: .*eV or keV"),
        ({"camera_pixel_size": 0.075}, r"`camera_pixel_size` is \[0\.075, 0\.075\] m, over 0\.01 m: .*millimetres"),
        ({"distance": 1000.0}, r"`distance` is 1000 m, over 100 m: it looks like millimetres"),
        ({"camera_pixel_size": 1e-9}, r"object pixel wavelength \* distance / \(N \* camera_pixel_size\) is .*"),
        ({"wavelength": 5e-4, "distance": 90.0}, r"object pixel .* outside \[1e-12, 0\.001\] m"),
    ],
)
def test_check_geometry_refuses_unit_slips(changes, message):
    with pytest.raises(jio.GeometryError, match=message):
        jio.check_geometry(_with(DATASETS["far"], **changes))


def test_check_geometry_refuses_huge_grid_and_tiny_steps():
    data = DATASETS["far"]
    positions = np.asarray(data.positions)
    with pytest.raises(jio.GeometryError, match=r"over `max_pixels` = 1e\+06: `positions` span .* micrometres"):
        jio.check_geometry(_with(data, positions=positions * 1e6), max_pixels=10**6)
    grid = jio.check_geometry(data)
    assert jio.check_geometry(data, max_pixels=grid.num_pixels) == grid
    with pytest.raises(jio.GeometryError, match=r"over `max_pixels` = .*raise `max_pixels` if the scan really"):
        jio.check_geometry(data, max_pixels=grid.num_pixels - 1)
    with pytest.raises(jio.GeometryError, match=r"median step between neighbouring `positions` is .* under 0\.01"):
        jio.check_geometry(_with(data, positions=positions * 1e-3))
    # Repeated positions (several frames per position) are not a zero step.
    twice = np.concatenate([positions[:8], positions[:8]])
    assert jio.check_geometry(_with(data, positions=twice)).median_step_px > 2
