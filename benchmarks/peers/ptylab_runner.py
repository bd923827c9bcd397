"""Run PtyLab (PyPI `ptylab`, import `PtyLab`) on a peer-benchmark problem and time it.

    benchmarks/peers/.venv-ptylab/bin/python benchmarks/peers/ptylab_runner.py \
        --data small.npz --engine epie --iterations 50 --out ptylab-epie.json

The problem file comes from make_npz.py; the format and the JSON written are described in
benchmarks/README.md ("Peers"). Only PtyLab's public objects are used: `ExperimentalData`
(loaded from an HDF5 file in PtyLab's own layout), `Params`, `Reconstruction`,
`DummyMonitor` and the engines `Engines.ePIE` / `Engines.mPIE`.

Geometry. PtyLab's far field (`propagatorType = "Fraunhofer"`) is the same centred
unitary FFT as janssen's; its object pixel is `wavelength * zo / (Nd * dxd)`, janssen's
`dx`. Its object is a square `No x No` grid and a frame's window has its top-left pixel
at `(row, col) = round(encoder / dxo) + No // 2 - Np // 2`, with `encoder` in metres
ordered `(row, col) = (y, x)`. The runner sets `No` to the larger side of janssen's object,
places janssen's object at PtyLab's top-left pixel, and writes the encoder that puts each
window on the file's `positions_px`. Before reconstructing it checks that PtyLab's
operator applied to the true object and probe reproduces the noiseless intensities.

Start: the unit object and the file's `probe`. ePIE and mPIE refine object and probe
together from the first iteration (PtyLab's defaults: `betaObject = betaProbe = 0.25`,
position order sequential for two iterations then random), with PtyLab's fast far-field
layout (`fftshiftSwitch = True`) and every constraint off.

Timing: `compile_s` is the first iteration including the engine's preparation
(`_prepareReconstruction`, run inside `reconstruct`); building the PtyLab objects happens
before the clock starts and takes well under a second.
"""

import contextlib
import importlib.metadata
import logging
import os
import sys
import tempfile

import h5py
import numpy as np
from _common import (
    Clock,
    History,
    illumination,
    load_npz,
    relative_mismatch,
    runner_parser,
    summarise,
    whole_corners,
    write_json,
)

with contextlib.redirect_stdout(sys.stderr):  # PtyLab reports its GPU check on import
    from PtyLab import Engines, ExperimentalData, Params, Reconstruction
    from PtyLab.Monitor.Monitor import DummyMonitor

ENGINES = {"epie": "ePIE", "mpie": "mPIE"}
DEFAULT_ENGINE = "epie"


def square(pair, name):
    pair = np.atleast_1d(np.asarray(pair, np.float64))
    if not np.allclose(pair, pair[0], rtol=1e-9):
        raise ValueError(f"PtyLab needs square pixels; `{name}` is {pair}")
    return float(pair[0])


def side_of(data):
    """PtyLab's object side `No`: the larger side of janssen's object, even."""
    side = int(max(data["object_shape"]))
    return side + side % 2


def encoder_for(data, side):
    """PtyLab encoder `(y, x)` metres that puts window `j` at the file's corner `positions_px[j]`."""
    np_ = data["intensities"].shape[-1]
    corners = whole_corners(data["positions_px"])  # (x, y)
    dx = square(data["dx"], "dx")
    offset = side // 2 - np_ // 2
    return (corners[:, ::-1] - offset).astype(np.float64) * dx


def write_ptylab_hdf5(path, data, side):
    """The problem in PtyLab's HDF5 layout (`ExperimentalData`'s required CPM fields)."""
    n, h, w = data["intensities"].shape
    if h != w:
        raise ValueError(f"PtyLab needs square frames, got {h}x{w}")
    with h5py.File(path, "w") as archive:
        archive["ptychogram"] = data["intensities"].astype(np.float32)
        archive["wavelength"] = float(data["wavelength"])
        archive["encoder"] = encoder_for(data, side)
        archive["dxd"] = square(data["camera_pixel_size"], "camera_pixel_size")
        archive["zo"] = float(data["distance"])


def build(data, engine_name, args):
    """PtyLab's data, parameters, reconstruction (at the benchmark start) and engine."""
    side = side_of(data)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "problem.hdf5")
        write_ptylab_hdf5(path, data, side)
        with contextlib.redirect_stdout(sys.stderr):  # PtyLab prints what it loads
            experimental = ExperimentalData(path, "CPM")
    params = Params()
    params.gpuSwitch = False
    params.propagatorType = "Fraunhofer"
    params.fftshiftSwitch = not args.no_fftshift
    params.positionOrder = args.order
    reconstruction = Reconstruction(experimental, params)
    reconstruction.No = side
    modes = data["probe"].shape[0]
    reconstruction.npsm = modes
    reconstruction.initializeObjectProbe()
    reconstruction.object = np.ones_like(reconstruction.object, dtype=np.complex64)
    reconstruction.probe = data["probe"].astype(np.complex64).reshape(reconstruction.probe.shape)
    check_geometry(data, reconstruction)
    engine = getattr(Engines, ENGINES[engine_name])(reconstruction, experimental, params, DummyMonitor())
    if args.object_step is not None:
        engine.betaObject = args.object_step
    if args.probe_step is not None:
        engine.betaProbe = args.probe_step
    return experimental, params, reconstruction, engine


def check_geometry(data, reconstruction):
    """PtyLab's object pixel and windows must be janssen's."""
    dx = square(data["dx"], "dx")
    if abs(reconstruction.dxo - dx) > 1e-6 * dx:
        raise RuntimeError(f"PtyLab's object pixel {reconstruction.dxo} m differs from the file's {dx} m")
    rows_cols = np.asarray(reconstruction.positions)
    if not np.array_equal(rows_cols[:, ::-1], whole_corners(data["positions_px"])):
        raise RuntimeError("PtyLab's window corners differ from the file's positions_px")


def forward_check(data, params, reconstruction, engine):
    """Relative mismatch of PtyLab's far-field model of the truth against the file's intensities."""
    side = reconstruction.No
    y, x = data["object_true"].shape
    truth = np.ones((side, side), np.complex64)
    truth[:y, :x] = data["object_true"]
    probe = data["probe_true"].astype(np.complex64).reshape(reconstruction.probe.shape)
    n, h, w = data["intensities"].shape
    predicted = np.empty((n, h, w), np.float64)
    for j, (row, col) in enumerate(np.asarray(reconstruction.positions)):
        exit_wave = truth[row : row + h, col : col + w] * probe
        reconstruction.esw = exit_wave
        engine.object2detector()  # the propagation the engine's intensity projection uses
        predicted[j] = np.sum(np.abs(reconstruction.ESW) ** 2, axis=(0, 1, 2))[-1]
    if params.fftshiftSwitch:  # PtyLab then keeps the frames in FFT order (zero frequency at [0, 0])
        predicted = np.fft.fftshift(predicted, axes=(-2, -1))
    check = {"vs_intensities": round(relative_mismatch(predicted, data["intensities"]), 6)}
    if "intensities_expected" in data:
        check["vs_expected"] = float(f"{relative_mismatch(predicted, data['intensities_expected']):.3g}")
    return check


def run(data, args):
    experimental, params, reconstruction, engine = build(data, args.engine, args)
    check = forward_check(data, params, reconstruction, engine)
    print(f"# forward model of the truth vs data: {check}", file=sys.stderr, flush=True)
    y, x = data["object_true"].shape
    truth = data["object_true"]
    illum = illumination(data["probe_true"], data["positions_px"], data["object_shape"])

    def current():
        return np.asarray(reconstruction.object)[0, 0, 0, 0, :y, :x]

    engine.numIterations = args.iterations
    history = History(truth, illum, ramp=args.ramp_history)

    last = experimental.numFrames - 1
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        clock = Clock()
        if args.engine == "epie":
            for _, position_loop in engine.reconstruct_stepwise():
                if position_loop == last:
                    clock.lap()
                    history.add(current())
                    clock.resume()
        else:

            def after_iteration(loop, _reconstruction):
                clock.lap()
                history.add(current())
                clock.resume()

            engine.reconstruct(vis_after_each_iteration=after_iteration)
        # the last iteration's error metric and constraints run after the last yield
        clock.lap(extend=True)
    final = current()
    if args.save_object:
        np.save(args.save_object, final)
    settings = {
        "betaObject": engine.betaObject,
        "betaProbe": engine.betaProbe,
        "probe": "refined jointly from iteration 1",
        "positionOrder": params.positionOrder,
        "fftshiftSwitch": params.fftshiftSwitch,
    }
    return summarise(
        peer="ptylab",
        version=importlib.metadata.version("ptylab"),
        engine=args.engine,
        settings=settings,
        clock=clock,
        history=history,
        final_object=final,
        device="cpu (NumPy)",
        forward_check=check,
    )


def main(argv=None):
    parser = runner_parser(__doc__.splitlines()[0], ENGINES, DEFAULT_ENGINE)
    parser.add_argument("--object-step", type=float, default=None, help="betaObject (default: PtyLab's 0.25)")
    parser.add_argument("--probe-step", type=float, default=None, help="betaProbe (default: PtyLab's 0.25)")
    parser.add_argument("--order", default="random", choices=["random", "sequential"], help="params.positionOrder")
    parser.add_argument("--no-fftshift", action="store_true", help="keep the frames centred (fftshiftSwitch False)")
    parser.add_argument("--seed", type=int, default=0, help="NumPy seed (PtyLab's random position order)")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    np.random.seed(args.seed)
    write_json(args.out, run(load_npz(args.data), args))


if __name__ == "__main__":
    sys.exit(main())
