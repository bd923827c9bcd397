#!/usr/bin/env bash
# The suite on a GPU in one call: the table of docs/benchmarks.md's "On a GPU" section.
#
#     bash benchmarks/gpu_suite.sh [OUT_DIR] [SECONDS]
#
# Run from the repository root on a machine whose Python has a CUDA build of JAX and
# janssen's dependencies (equinox, optax, lineax, optimistix, jaxtyping, h5py, numpy); janssen
# itself is taken from this checkout (PYTHONPATH), so nothing is installed and nothing is
# fetched. Writes into OUT_DIR (default: $OUT, else benchmarks/results):
#
# - gpu-info.txt: the card, its driver and CUDA version, Python, JAX and jaxlib, JAX's devices;
# - gpu-suite.jsonl: `run.py`'s rows for the PIE family on small, medium and large (each row
#   in its own process: cold compilation apart, medians of the iterations, the FFT floor
#   timed on the device in the same process);
# - gpu-least-squares.jsonl: Adam and Gauss-Newton on medium, if time is left;
# - gpu-suite.log: everything printed.
#
# SECONDS (default 480) bounds the whole script: each part gets what is left, so that a
# device lease of a few minutes returns the rows finished so far. Peers are not run: their
# GPU builds are not installed with janssen.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results}}
budget=${2:-480}
mkdir -p "$out"
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$out/gpu-suite.log"
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    nvidia-smi 2>/dev/null | grep -o "CUDA Version: [0-9.]*"
    "$python" -c "import sys, jax, jaxlib; print('python', sys.version.split()[0]); print('jax', jax.__version__, 'jaxlib', jaxlib.__version__); print('backend', jax.default_backend(), jax.devices())"
    "$python" -c "import equinox, optax, lineax, optimistix, h5py, numpy; print('equinox', equinox.__version__, 'optax', optax.__version__, 'lineax', lineax.__version__, 'optimistix', optimistix.__version__, 'h5py', h5py.__version__, 'numpy', numpy.__version__)"
} > "$out/gpu-info.txt" 2>&1
cat "$out/gpu-info.txt" | tee "$log"
if ! grep -q "^backend gpu" "$out/gpu-info.txt"; then
    echo "gpu_suite.sh: JAX does not run on a GPU here (see gpu-info.txt); stopping" | tee -a "$log"
    exit 2
fi
status=0
timeout "$(left)" "$python" benchmarks/run.py --sizes small,medium,large \
    --engines epie,rpie,mpie,epie-batched,rpie-batched,mpie-batched \
    --no-docs --out "$out/gpu-suite.jsonl" 2>&1 | tee -a "$log" || status=$?
if [ "$(left)" -gt 60 ]; then
    timeout "$(left)" "$python" benchmarks/run.py --sizes medium --engines adam,gauss-newton \
        --no-docs --out "$out/gpu-least-squares.jsonl" 2>&1 | tee -a "$log" || status=$?
fi
echo "gpu_suite.sh: done in $(( $(date +%s) - start )) s (exit $status)" | tee -a "$log"
exit "$status"
