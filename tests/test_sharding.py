"""Scan positions sharded over devices: 4 CPU devices (and 2 processes) match 1 device.

The pytest process has a single CPU device, so the multi-device runs happen in
subprocesses started with `XLA_FLAGS=--xla_force_host_platform_device_count=N`.
Measured on a noiseless 16-position problem of 32x32 frames, 3 iterations, relative
max differences |X_4 - X_1| / max |X_1| of object / probe: batched mPIE 5.6e-5 / 1.9e-5,
Adam 4.2e-6 / 9.6e-7, Gauss-Newton 2.9e-5 / 2.6e-6 (losses within 6.1e-7); two processes x
two devices (batched mPIE) against one device: 4.8e-5 (object). Summation order differs
between the layouts, and momentum (0.9) carries the rounding forward.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import noiseless_far_field_problem
from jax.sharding import Mesh, SingleDeviceSharding

from janssen.invert import MomentumPIE, reconstruct, shard_positions, trainable_spec
from janssen.scopes import FarFieldMicroscope

TESTS = pathlib.Path(__file__).resolve().parent
ITERATIONS = 3
TOLERANCE = {"mpie-batched": 3e-4, "adam": 1e-4, "gauss-newton": 1e-3}

# Reconstructs the problem with each engine on 1 device and on 4; prints the differences.
_COMPARE = """
import json, sys, tempfile
import jax, jax.numpy as jnp, numpy as np, optax
from helpers import counting_engine, noiseless_far_field_problem
from janssen.invert import GaussNewton, Gradient, MomentumPIE, reconstruct, shard_positions
from janssen.invert._sharding import replicate_like_data
from janssen.io import CXIFrames, MicroscopeData, write_cxi
from janssen.scopes import FarFieldMicroscope

data, _, start = noiseless_far_field_problem()
rms = float(jnp.sqrt(jnp.mean(jnp.abs(start.probe.fields()) ** 2)))
engines = {
    "mpie-batched": MomentumPIE(mode="batched"),
    "adam": Gradient(optax.adam(0.02), learning_rates={"probe": rms}),
    "gauss-newton": GaussNewton(cg_maxiter=5),
}
report = {"devices": len(jax.devices())}
microscope, sharded = shard_positions(start, data)
report["layout"] = {
    "intensities": str(sharded.intensities.sharding.spec),
    "data.positions": str(sharded.positions.sharding.spec),
    "microscope.positions": str(microscope.positions.sharding.spec),
    "object": str(microscope.sample.sample.sharding.spec),
    "bad_pixels": str(sharded.bad_pixels.sharding.spec),
    "state": str(replicate_like_data(jnp.zeros(()), sharded).sharding.spec),
}
for name, engine in engines.items():
    runs = {}
    engine, traces = counting_engine(engine)
    new_traces, layout_traces = 0, []
    for count in (1, 4):
        traces.clear()
        microscope, sharded = shard_positions(start, data, devices=jax.devices()[:count])
        solution = reconstruct(microscope, sharded, engine, num_iterations=int(sys.argv[1]))
        # The first resume may compile once more (the fresh engine state sits on one device
        # until a step has returned it laid out over the mesh); after that, nothing is new.
        again = reconstruct(solution, sharded, engine, num_iterations=1)
        before = len(traces)
        reconstruct(again, sharded, engine, num_iterations=1)
        reconstruct(microscope, sharded, engine, num_iterations=1)
        new_traces += len(traces) - before
        layout_traces.append(len(traces))
        mesh = getattr(solution.state, "mesh", None)
        runs[count] = (
            np.asarray(solution.microscope.sample.sample),
            np.asarray(solution.microscope.probe.fields()),
            np.asarray(solution.losses),
            0 if mesh is None else mesh.size,
        )
    (o1, p1, l1, _), (o4, p4, l4, mesh4) = runs[1], runs[4]
    report[name] = {
        "object": float(np.max(np.abs(o4 - o1)) / np.max(np.abs(o1))),
        "probe": float(np.max(np.abs(p4 - p1)) / np.max(np.abs(p1))),
        "loss": float(np.max(np.abs(l4 - l1) / l1)),
        "moved": float(np.max(np.abs(o1 - 1.0))),
        "losses": l1.tolist(),
        "pie_mesh_size": mesh4,
        "traces": layout_traces,
        "new_traces": new_traces,
    }
fewer = FarFieldMicroscope(start.probe, start.sample, start.positions[:15])
try:
    shard_positions(fewer, MicroscopeData(data.intensities[:15], data.positions[:15], data.wavelength,
                                          data.camera_pixel_size, data.distance))
    report["uneven"] = ""
except ValueError as error:
    report["uneven"] = str(error)
with tempfile.TemporaryDirectory() as folder:
    write_cxi(folder + "/scan.cxi", data)
    with CXIFrames(folder + "/scan.cxi") as frames:
        from_file = shard_positions(start, frames)[1]
    shards = from_file.intensities.addressable_shards
    report["file_shards"] = [list(shard.data.shape) for shard in shards]
    report["file_equal"] = bool(np.array_equal(np.asarray(from_file.intensities), np.asarray(data.intensities)))
print(json.dumps(report))
"""


def _environment(devices: int) -> dict[str, str]:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(TESTS))


@pytest.fixture(scope="module")
def four_device_report():
    command = [sys.executable, "-c", _COMPARE, str(ITERATIONS)]
    result = subprocess.run(command, env=_environment(4), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_four_devices_match_one(four_device_report, name):
    assert four_device_report["devices"] == 4
    report, tolerance = four_device_report[name], TOLERANCE[name]
    # The run must do something, or agreeing would prove nothing: the object moves by far
    # more than the tolerance and the loss falls.
    assert report["moved"] > 100 * tolerance
    assert report["losses"][-1] < 0.9 * report["losses"][0]
    assert report["object"] <= tolerance, report
    assert report["probe"] <= tolerance, report
    assert report["loss"] <= tolerance, report
    if name == "mpie-batched":
        assert report["pie_mesh_size"] == 4  # the explicit per-device split was taken
    # Resuming again, or a fresh call with the same shapes, compiles nothing new.
    assert report["new_traces"] == 0
    # One trace on one device; on four, one more at the first resume (the fresh engine
    # state starts on one device; placing it with `replicate_like_data` in the driver
    # removes that).
    assert report["traces"][0] == 1 and report["traces"][1] in (1, 2)


def test_layout_over_four_devices(four_device_report):
    assert four_device_report["layout"] == {
        "intensities": "P('positions',)",
        "data.positions": "P('positions',)",
        "microscope.positions": "P('positions',)",
        "object": "P()",
        "bad_pixels": "P()",
        "state": "P()",
    }


def test_frames_read_from_a_file_per_device(four_device_report):
    # Each of the 4 devices holds (and read from the file) its own 4 of the 16 frames.
    assert four_device_report["file_shards"] == [[4, 32, 32]] * 4
    assert four_device_report["file_equal"]


def test_uneven_split_is_refused(four_device_report):
    message = four_device_report["uneven"]
    assert "15 positions cannot be split evenly over 4 devices" in message
    assert "[1, 3]" in message  # the device counts that divide 15


# One process of a two-process run: 2 CPU devices each, 4 in all.
_WORKER = """
import sys
import jax
process, port, out, iterations = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process)
import numpy as np
from helpers import noiseless_far_field_problem
from janssen.invert import MomentumPIE, reconstruct, shard_positions

data, _, start = noiseless_far_field_problem()
microscope, sharded = shard_positions(start, data)
assert len(jax.devices()) == 4 and not sharded.intensities.is_fully_addressable
solution = reconstruct(microscope, sharded, MomentumPIE(mode="batched"), num_iterations=iterations)
np.save(out, np.asarray(solution.microscope.sample.sample))
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_match_one_device(tmp_path):
    port = str(_free_port())
    outs = [tmp_path / f"object{i}.npy" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(i), port, str(outs[i]), str(ITERATIONS)],
            env=_environment(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    logs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, logs):
        assert worker.returncode == 0, err[-3000:]
    data, _, start = noiseless_far_field_problem()
    solution = reconstruct(start, data, MomentumPIE(mode="batched"), num_iterations=ITERATIONS)
    reference = np.asarray(solution.microscope.sample.sample)
    assert np.max(np.abs(reference - 1.0)) > 0.01  # the object moved
    for out in outs:
        assert np.max(np.abs(np.load(out) - reference)) / np.max(np.abs(reference)) <= 3e-4


def test_layout_on_one_device():
    data, _, start = noiseless_far_field_problem(grid=3)
    microscope, sharded = shard_positions(start, data)
    device = jax.devices()[0]
    for array in (sharded.intensities, microscope.positions, microscope.sample.sample):
        assert array.sharding == SingleDeviceSharding(device) and array.committed
    np.testing.assert_array_equal(np.asarray(sharded.intensities), np.asarray(data.intensities))
    np.testing.assert_array_equal(np.asarray(microscope.positions), np.asarray(start.positions))
    # One device: the PIE engines keep their single-device schedule (no mesh in the state).
    engine = MomentumPIE(mode="batched")
    assert engine.init(microscope, sharded, trainable_spec(microscope, ("object", "probe"))).mesh is None


def test_bad_arguments():
    data, _, start = noiseless_far_field_problem(grid=3)
    with pytest.raises(ValueError, match="axis named 'positions'"):
        shard_positions(start, data, devices=Mesh(np.asarray(jax.devices()), ("x",)))
    fewer = FarFieldMicroscope(start.probe, start.sample, start.positions[:4])
    with pytest.raises(ValueError, match="9 frames but the microscope has 4"):
        shard_positions(fewer, data)
    with pytest.raises(ValueError, match="at least one device"):
        shard_positions(start, data, devices=[])
