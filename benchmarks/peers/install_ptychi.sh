#!/usr/bin/env bash
# Install pty-chi (PyPI package `ptychi`) into its own virtual environment for the peer
# benchmarks (benchmarks/README.md, "Peers").
#
#   bash benchmarks/peers/install_ptychi.sh
#
# Environment:
#   PTYCHI_VENV     where to create the venv (default: benchmarks/peers/.venv-ptychi)
#   PTYCHI_VERSION  the pty-chi release (default: 2.2.0, the one the runner was checked with)
#   PTYCHI_TORCH    the PyTorch requirement(s), installed first (default: torch==2.13.0, see below)
#   PTYCHI_TORCHVISION  torchvision requirement (default: none; see below)
#   PYTHON          the interpreter that creates the venv (default: python3; pty-chi needs >= 3.11)
#
# PyTorch is installed before pty-chi and pinned, so that pty-chi's unpinned `torch>=2.4`
# cannot pull a different (multi-GB, CUDA) build. The default torch==2.13.0 is the CPU build
# (2.13.0+cpu) that this project's machines keep on disk (pip's find-links picks it up).
# pty-chi imports `torchvision.transforms.GaussianBlur` at start-up (`ptychi.utils`) but
# calls it only for a random initial guess that the runner never asks for; no torchvision
# on PyPI imports beside a CPU-only torch (their compiled ops link against the CUDA build:
# "operator torchvision::nms does not exist"). So by default pty-chi is installed without
# its dependencies, then its run-time dependencies less torchvision (and less its mypy,
# pytest and ruff, development tools), and ptychi_runner.py puts a stand-in for
# torchvision's GaussianBlur in place (recorded in the result's `device`).
# With PTYCHI_TORCHVISION set (e.g. PTYCHI_TORCH="torch==2.14.1" PTYCHI_TORCHVISION=
# "torchvision==0.29.1", a CUDA pair of about 5.5 GB that also runs on the CPU), pty-chi is
# installed with its dependencies as published.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PTYCHI_VENV:-$here/.venv-ptychi}"
version="${PTYCHI_VERSION:-2.2.0}"
torch_spec="${PTYCHI_TORCH:-torch==2.13.0}"
torchvision_spec="${PTYCHI_TORCHVISION:-}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # the specs are lists of requirements (and maybe options)
"$venv/bin/python" -m pip install --quiet $torch_spec $torchvision_spec
if [ -n "$torchvision_spec" ]; then
    # Keep the torch just installed: pty-chi's own `torch>=2.4` is then already satisfied.
    "$venv/bin/python" -m pip install --quiet "ptychi==$version" numpy h5py
else
    "$venv/bin/python" -m pip install --quiet --no-deps "ptychi==$version"
    "$venv/bin/python" -m pip install --quiet h5py "numpy>=2.1" pandas "pydantic>=2,<3" scikit-image scikit-learn \
        scipy tqdm "matplotlib>=3.10.6"
fi
# Import pty-chi as the runner does (torchvision or its stand-in first).
(cd "$here" && "$venv/bin/python" -c "import ptychi_runner as r, importlib.metadata as m, torch; print('ptychi', m.version('ptychi'), 'torch', torch.__version__, '|', r.TORCHVISION)")
echo "pty-chi installed in $venv"
echo "run: $venv/bin/python $here/ptychi_runner.py --data FILE.npz --engine lsqml --iterations 50 --out result.json"
