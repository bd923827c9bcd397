#!/usr/bin/env bash
# Install PtyLab (PyPI package `ptylab`) into its own virtual environment for the peer
# benchmarks (benchmarks/README.md, "Peers").
#
#   bash benchmarks/peers/install_ptylab.sh
#
# Environment:
#   PTYLAB_VENV     where to create the venv (default: benchmarks/peers/.venv-ptylab)
#   PTYLAB_VERSION  the PtyLab release (default: 0.3.7, the one the runner was checked with)
#   PYTHON          the interpreter that creates the venv (default: python3; PtyLab needs >= 3.11)
#
# PtyLab's GPU extra (cupy) is not installed: the runner uses NumPy on the CPU.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PTYLAB_VENV:-$here/.venv-ptylab}"
version="${PTYLAB_VERSION:-0.3.7}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "ptylab==$version" numpy h5py
# The distribution `ptylab` installs the import package `PtyLab`.
"$venv/bin/python" -c "import importlib.metadata as m, numpy, PtyLab; print('ptylab', m.version('ptylab'), 'numpy', numpy.__version__)"
echo "PtyLab installed in $venv"
echo "run: $venv/bin/python $here/ptylab_runner.py --data FILE.npz --engine epie --iterations 50 --out result.json"
