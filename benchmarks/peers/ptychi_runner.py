"""Run pty-chi (PyPI `ptychi`) on a peer-benchmark problem and time it.

    benchmarks/peers/.venv-ptychi/bin/python benchmarks/peers/ptychi_runner.py \
        --data small.npz --engine lsqml --iterations 50 --out ptychi-lsqml.json

The problem file comes from make_npz.py; the format and the JSON written are described in
benchmarks/README.md ("Peers"). Only pty-chi's public API is used: the option classes of
`ptychi.api` (`EPIEOptions`, `RPIEOptions`, `LSQMLOptions`) and `ptychi.api.task.PtychographyTask`
(`run(n_epochs=1)` once per iteration, `get_data_to_cpu`, and its reconstructor's
`forward_model` for the model check).

Geometry. pty-chi's far field is an *uncentred, unnormalised* FFT (`torch.fft.fft2`) of the
exit wave; with `data_options.fft_shift = True` it moves the centred frames' zero frequency
to pixel [0, 0] itself. So the intensities are `H * W` times janssen's (centred, unitary)
for the same fields: the runner passes the probe divided by `sqrt(H * W)`, which leaves the
object, and so the object error, unchanged. Positions are probe *centres* in object pixels
`(y, x)`, measured from `round(N / 2) - 0.5` (the default origin, "SUPPORT"), and a window
starts at `centre - (h - 1) / 2`; the runner converts the file's top-left corners with
`centre = corner + (h - 1) / 2 - (round(N / 2) - 0.5)`. Before reconstructing it checks
that pty-chi's forward model of the true object and probe reproduces the noiseless
intensities.

Start: the unit object and the file's `probe`. Object and probe are refined together
from the first epoch (pty-chi's default `optimization_plan`), positions fixed, on the
CPU in float32. Everything else is pty-chi's default unless set by a flag: mini-batches
of 100 frames drawn at random, ePIE/rPIE `alpha = 0.1` with SGD step 1, LSQML with the
Gaussian noise model and `optimal_step_size_scaler = 0.9` (its first epoch only rescales
the probe's power to the data: `rescale_probe_intensity_in_first_epoch`).

Timing: `compile_s` is building the task plus the first epoch. The model check builds a
task first in the same process, so torch's one-time start-up is not in `compile_s`.
"""

import contextlib
import importlib.metadata
import logging
import os
import sys
import types

import numpy as np
import torch
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


def _torchvision_or_stand_in():
    """Import torchvision, or put a stand-in in its place; return a note saying which.

    pty-chi 2.2.0 imports `torchvision.transforms.GaussianBlur` at start-up (`ptychi.utils`)
    and calls it only in `generate_gaussian_random_image`, a random initial guess that this
    runner never asks for. With the CPU-only torch (2.13.0+cpu), no torchvision on PyPI
    imports (their compiled ops link against the CUDA build), so install_ptychi.sh's CPU
    mode installs none and this stand-in, whose `GaussianBlur` raises if ever called,
    lets pty-chi start.
    """
    try:
        import torchvision.transforms  # noqa: F401

        return f"torchvision {importlib.metadata.version('torchvision')}"
    except (ImportError, RuntimeError) as error:
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__

    class GaussianBlur:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is not installed here (benchmarks/peers/ptychi_runner.py)")

    package, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    transforms.GaussianBlur = GaussianBlur
    package.transforms = transforms
    sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})
    return f"no torchvision ({reason}): a stand-in GaussianBlur, unused"


TORCHVISION = _torchvision_or_stand_in()

from ptychi import api  # noqa: E402  (after torchvision or its stand-in)
from ptychi.api.task import PtychographyTask  # noqa: E402

ENGINES = {"epie": "EPIEOptions", "rpie": "RPIEOptions", "lsqml": "LSQMLOptions"}
DEFAULT_ENGINE = "lsqml"


def centres_px(data):
    """pty-chi probe-centre positions `(y, x)` in object pixels from the file's top-left corners."""
    _, h, w = data["intensities"].shape
    ny, nx = (int(s) for s in data["object_shape"])
    corners = whole_corners(data["positions_px"]).astype(np.float64)  # (x, y)
    origin_y, origin_x = round(ny / 2) - 0.5, round(nx / 2) - 0.5
    return corners[:, 1] + (h - 1) / 2 - origin_y, corners[:, 0] + (w - 1) / 2 - origin_x


def options_for(data, engine, args):
    """pty-chi options for `engine`: the benchmark's geometry and the engine settings."""
    options = getattr(api, ENGINES[engine])()
    options.data_options.wavelength_m = float(data["wavelength"])
    options.data_options.fft_shift = True  # the file's frames are centred
    dx = np.asarray(data["dx"], np.float64).ravel()
    options.object_options.pixel_size_m = float(dx[0])
    options.object_options.pixel_size_aspect_ratio = float(dx[0] / dx[-1])  # width / height
    options.object_options.optimizable = True
    options.probe_options.optimizable = not args.fix_probe
    options.probe_position_options.optimizable = False
    reconstructor = options.reconstructor_options
    reconstructor.num_epochs = args.iterations
    reconstructor.default_device = api.Devices.CPU
    reconstructor.random_seed = args.seed
    if args.batch_size is not None:
        reconstructor.batch_size = args.batch_size
    if args.batching is not None:
        reconstructor.batching_mode = getattr(api.BatchingModes, args.batching.upper())
    if args.momentum is not None:
        if engine != "lsqml":
            raise ValueError("--momentum is LSQML's momentum_acceleration_gain")
        reconstructor.momentum_acceleration_gain = args.momentum
    if args.noise_model is not None:
        if engine != "lsqml":
            raise ValueError("--noise-model is LSQML's noise_model")
        reconstructor.noise_model = getattr(api.NoiseModels, args.noise_model.upper())
    if engine in ("epie", "rpie"):
        if args.object_alpha is not None:
            options.object_options.alpha = args.object_alpha
        if args.probe_alpha is not None:
            options.probe_options.alpha = args.probe_alpha
    if args.object_step is not None:
        options.object_options.step_size = args.object_step
    if args.probe_step is not None:
        options.probe_options.step_size = args.probe_step
    return options


def make_task(data, options, *, obj, probe):
    """A `PtychographyTask` on the file's frames and positions, starting from `obj` and `probe`."""
    _, h, w = data["intensities"].shape
    pos_y, pos_x = centres_px(data)
    return PtychographyTask(
        options,
        diffraction_data=data["intensities"].astype(np.float32),
        object_data=obj.astype(np.complex64)[None],
        # Divided by sqrt(H * W) for pty-chi's unnormalised FFT (see the module docstring).
        probe_data=(probe / np.sqrt(h * w)).astype(np.complex64)[None],
        probe_position_y_px=pos_y,
        probe_position_x_px=pos_x,
    )


def settings_of(options, engine):
    """The settings that decide the iteration, for the JSON record."""
    out = {
        "batch_size": options.reconstructor_options.batch_size,
        "batching_mode": str(options.reconstructor_options.batching_mode),
        "object_step_size": options.object_options.step_size,
        "probe_step_size": options.probe_options.step_size,
        "probe": "fixed" if not options.probe_options.optimizable else "refined jointly from epoch 1",
        "dtype": "float32",
    }
    if engine in ("epie", "rpie"):
        out.update(object_alpha=options.object_options.alpha, probe_alpha=options.probe_options.alpha)
    else:
        out.update(
            noise_model=str(options.reconstructor_options.noise_model),
            momentum_acceleration_gain=options.reconstructor_options.momentum_acceleration_gain,
            object_optimal_step_size_scaler=options.object_options.optimal_step_size_scaler,
            probe_optimal_step_size_scaler=options.probe_options.optimal_step_size_scaler,
        )
    return out


def forward_check(data, engine, args):
    """Relative mismatch of pty-chi's forward model of the truth against the file's intensities."""
    with contextlib.redirect_stdout(sys.stderr):
        task = make_task(data, options_for(data, engine, args), obj=data["object_true"], probe=data["probe_true"])
    n = data["intensities"].shape[0]
    with torch.no_grad():
        predicted = task.reconstructor.forward_model.forward(torch.arange(n)).cpu().numpy()
    # pty-chi predicts frames with the zero frequency at [0, 0]; the file's are centred.
    predicted = np.fft.fftshift(predicted, axes=(-2, -1))
    check = {"vs_intensities": round(relative_mismatch(predicted, data["intensities"]), 6)}
    if "intensities_expected" in data:
        check["vs_expected"] = float(f"{relative_mismatch(predicted, data['intensities_expected']):.3g}")
    return check


def run(data, args):
    check = forward_check(data, args.engine, args)
    print(f"# forward model of the truth vs data: {check}", file=sys.stderr, flush=True)
    truth = data["object_true"]
    illum = illumination(data["probe_true"], data["positions_px"], data["object_shape"])
    options = options_for(data, args.engine, args)
    clock, history = Clock(), History(truth, illum, ramp=args.ramp_history)
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        # The task's setup counts towards the first iteration (compile_s), as janssen's tracing does.
        task = make_task(data, options, obj=np.ones_like(truth), probe=data["probe"])
        for _ in range(args.iterations):
            task.run(n_epochs=1)  # CPU tensors: the call returns when the work is done
            clock.lap()
            history.add(task.get_data_to_cpu("object", as_numpy=True)[0])
            clock.resume()
    final_object = task.get_data_to_cpu("object", as_numpy=True)[0]
    if args.save_object:
        np.save(args.save_object, final_object)
    return summarise(
        peer="ptychi",
        version=importlib.metadata.version("ptychi"),
        engine=args.engine,
        settings=settings_of(options, args.engine),
        clock=clock,
        history=history,
        final_object=final_object,
        device=f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads; {TORCHVISION})",
        forward_check=check,
    )


def main(argv=None):
    parser = runner_parser(__doc__.splitlines()[0], ENGINES, DEFAULT_ENGINE)
    parser.add_argument("--batch-size", type=int, default=None, help="frames per mini-batch (default: pty-chi's 100)")
    parser.add_argument(
        "--batching", default=None, choices=["random", "compact", "uniform"], help="batching_mode (default: random)"
    )
    parser.add_argument("--momentum", type=float, default=None, help="LSQML momentum_acceleration_gain (default 0)")
    parser.add_argument(
        "--noise-model", default=None, choices=["gaussian", "poisson"], help="LSQML noise_model (default gaussian)"
    )
    parser.add_argument("--object-alpha", type=float, default=None, help="ePIE/rPIE object alpha (default 0.1)")
    parser.add_argument("--probe-alpha", type=float, default=None, help="ePIE/rPIE probe alpha (default 0.1)")
    parser.add_argument("--object-step", type=float, default=None, help="object step_size (default 1)")
    parser.add_argument("--probe-step", type=float, default=None, help="probe step_size (default 1)")
    parser.add_argument("--fix-probe", action="store_true", help="hold the probe at the start (default: refine it)")
    parser.add_argument("--seed", type=int, default=0, help="pty-chi's random_seed (mini-batch draws)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's, one per core)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.WARNING)
    write_json(args.out, run(load_npz(args.data), args))


if __name__ == "__main__":
    sys.exit(main())
