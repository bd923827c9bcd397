"""The real Siemens star on the default path: janssen's default command against PtyLab's ePIE, in one run.

    python benchmarks/star.py [--star FILE] [--out-dir DIR] [--ptylab-iterations 200] [--no-peer]

1. `janssen reconstruct STAR --out DIR/star_default.h5` in a fresh process, no engine
   option and no probe option (the default path: the file's probe, the default
   schedule), with the compilation cache off (a cold start) unless `--warm`; its wall
   time from the command's start to its end (loading, compiling, figures included).
2. R = sum (|Psi| - sqrt(I))**2 / sum I of the result, and the complex FRC against the
   two peers' reconstructions in `../shared/data/reference` (`../shared/tools/frc_star.py`).
3. PtyLab's ePIE (its default steps 0.25, random order) for `--ptylab-iterations`
   iterations from the same start (unit object, the file's probe centred on the data),
   through `benchmarks/peers/ptylab_runner.py` in PtyLab's own environment
   (`JANSSEN_PEER_PYTHON_PTYLAB`, or `benchmarks/peers/.venv-ptylab/bin/python`); its
   `total_s` is the iterations' wall time (PtyLab's setup and the runner's error
   evaluations excluded, so the comparison favours PtyLab).

Prints one JSON object; `--out FILE.json` also writes it.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
STAR = SHARED / "data" / "tike_siemens_star" / "siemens-star-small.npz.bz2"


def r_factor(result: pathlib.Path, star: pathlib.Path) -> float:
    """R of a result file's object, probe and positions on the star's frames."""
    import janssen.io as jio
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    saved = jio.read_result(result)
    data = jio.load_siemens_star(star).data
    dx = saved["object_pixel_size"]
    microscope = FarFieldMicroscope(
        Probe(np.asarray(saved["probe"]), saved["wavelength"], dx),
        SampleFunction(saved["object"], dx),
        saved["positions"],
    )
    predicted = np.asarray(jax.jit(lambda m: m())(microscope))
    measured, valid = np.asarray(data.intensities), np.asarray(data.valid)
    return float(np.sum(valid * (np.sqrt(predicted) - np.sqrt(measured)) ** 2) / np.sum(valid * measured))


def frc(result: pathlib.Path) -> dict:
    out = {}
    for name in ("star_ptychi.npz", "star_ptylab_epie.npz"):
        reference = SHARED / "data" / "reference" / name
        text = subprocess.run(
            [sys.executable, str(SHARED / "tools" / "frc_star.py"), str(result), str(reference)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        out[name.removesuffix(".npz")] = json.loads(text)["frc_complex"]
    return out


def ptylab_problem(star: pathlib.Path, path: pathlib.Path) -> None:
    """The star as the peer runners' .npz (benchmarks/README.md, "Peers"), janssen's start."""
    import janssen.invert as jinv
    import janssen.io as jio

    sys.path.insert(0, str(HERE / "peers"))
    from make_npz import corners_px

    measured = jio.load_siemens_star(star)
    data = measured.data
    probe = np.asarray(jinv.align_probe_to_data(measured.probe, data))
    start = jinv.init_far_field_microscope(data, probe)
    shape = start.sample.shape
    dx = np.asarray(data.object_pixel_size, np.float64)
    # The runners take whole-pixel windows: the star's sub-pixel scan is rounded for PtyLab.
    corners = np.rint(corners_px(start.positions, dx, shape, data.frame_shape))
    np.savez(
        path,
        intensities=np.asarray(data.intensities, np.float32),
        positions_px=corners,
        positions_m=np.asarray(start.positions, np.float64),
        probe=probe[None].astype(np.complex64),
        object_shape=np.array(shape, np.int64),
        object_true=np.ones(shape, np.complex64),
        probe_true=probe[None].astype(np.complex64),
        wavelength=np.float64(data.wavelength),
        dx=dx,
        distance=np.float64(data.distance),
        camera_pixel_size=np.asarray(data.camera_pixel_size, np.float64),
        size=np.array("star"),
        seed=np.int64(0),
    )


def run_janssen(star: pathlib.Path, out_dir: pathlib.Path, warm: bool) -> dict:
    result = out_dir / "star_default.h5"
    for stale in out_dir.glob("star_default*"):
        stale.unlink()
    command = (
        ["janssen"] + ([] if warm else ["--compile-cache", "off"]) + ["reconstruct", str(star), "--out", str(result)]
    )
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"janssen failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("schedule:", "R ="))]
    return {
        "command": " ".join(command),
        "wall_s": round(seconds, 1),
        "R": round(r_factor(result, star), 5),
        "frc": frc(result),
        "report": lines,
    }


def run_ptylab(star: pathlib.Path, out_dir: pathlib.Path, iterations: int) -> dict:
    python = os.environ.get("JANSSEN_PEER_PYTHON_PTYLAB", str(HERE / "peers" / ".venv-ptylab" / "bin" / "python"))
    if not pathlib.Path(python).exists():
        return {"skipped": f"no PtyLab environment at {python} (benchmarks/peers/install_ptylab.sh)"}
    problem, record = out_dir / "star_ptylab.npz", out_dir / "star_ptylab.json"
    ptylab_problem(star, problem)
    command = [
        python,
        str(HERE / "peers" / "ptylab_runner.py"),
        "--data",
        str(problem),
        "--engine",
        "epie",
        "--iterations",
        str(iterations),
        "--out",
        str(record),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"skipped": f"PtyLab failed ({done.returncode}): {done.stderr[-2000:]}"}
    saved = json.loads(record.read_text())
    return {
        "engine": "ePIE",
        "iterations": saved["iterations"],
        "total_s": saved["total_s"],
        "per_iter_s": saved["per_iter_s"],
        "settings": saved["settings"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--star", type=pathlib.Path, default=STAR)
    parser.add_argument("--out-dir", type=pathlib.Path, default=pathlib.Path("star-benchmark"))
    parser.add_argument("--ptylab-iterations", type=int, default=200)
    parser.add_argument("--no-peer", action="store_true", help="only janssen")
    parser.add_argument("--warm", action="store_true", help="keep the compilation cache (a second run)")
    parser.add_argument("--out", type=pathlib.Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not args.star.is_file():
        raise SystemExit(f"the Siemens-star file is not at {args.star} (see ../shared/data/README.md)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"janssen": run_janssen(args.star, args.out_dir, args.warm)}
    if not args.no_peer:
        summary["ptylab"] = run_ptylab(args.star, args.out_dir, args.ptylab_iterations)
    summary["cores"] = os.cpu_count()
    sys.path.insert(0, str(HERE))
    import floor

    summary["cpus"] = floor.usable_cpus()  # fewer under `taskset` (the command it starts inherits them)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
