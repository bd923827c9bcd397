#!/usr/bin/env bash
# Install pty-chi (PyPI package `ptychi`) into its own virtual environment for the peer
# benchmarks (benchmarks/README.md, "Peers").
#
#   bash benchmarks/peers/install_ptychi.sh
#
# Environment:
#   PTYCHI_VENV     where to create the venv (default: benchmarks/peers/.venv-ptychi)
#   PTYCHI_VERSION  the pty-chi release (default: 2.2.0, the one the runner was checked with)
#   PTYCHI_TORCH    the PyTorch requirement(s), installed first (see below)
#   PYTHON          the interpreter that creates the venv (default: python3; pty-chi needs >= 3.11)
#
# PyTorch is installed before pty-chi and pinned, so that pty-chi's unpinned `torch>=2.4`
# cannot pull a different (multi-GB) build. pty-chi imports torchvision at start-up
# (`ptychi.utils`), so torchvision must be a build that matches torch:
# - default "torch==2.14.1 torchvision==0.29.1": the pair that imports on the project's
#   machines (both files lie on their disk); it is a CUDA build of about 5.5 GB that runs on
#   the CPU, which is all the runner uses.
# - torch==2.13.0 alone (the CPU build on the project's machines' disk) is not enough:
#   PyPI's torchvision 0.28.0 beside it fails to import ("operator torchvision::nms does not
#   exist"), since its compiled ops link against the CUDA build of torch.
# - elsewhere, CPU builds of both from PyTorch's own CPU wheel index should work too
#   (not checked: the project's machines reach only PyPI), e.g.
#   PTYCHI_TORCH="torch torchvision --index-url <PyTorch CPU index>".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PTYCHI_VENV:-$here/.venv-ptychi}"
version="${PTYCHI_VERSION:-2.2.0}"
torch_spec="${PTYCHI_TORCH:-torch==2.14.1 torchvision==0.29.1}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # the spec is a list of requirements (and maybe options)
"$venv/bin/python" -m pip install --quiet $torch_spec
# Keep the torch just installed: pty-chi's own `torch>=2.4` is then already satisfied.
"$venv/bin/python" -m pip install --quiet "ptychi==$version" numpy h5py
"$venv/bin/python" -c "import torch, torchvision, ptychi; import importlib.metadata as m; print('ptychi', m.version('ptychi'), 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "pty-chi installed in $venv"
echo "run: $venv/bin/python $here/ptychi_runner.py --data FILE.npz --engine lsqml --iterations 50 --out result.json"
