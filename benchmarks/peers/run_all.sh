#!/usr/bin/env bash
# Run every peer configuration of benchmarks/README.md ("Peers") on one problem file.
#
#   bash benchmarks/peers/run_all.sh small.npz OUT_DIR [ITERATIONS]
#
# Writes OUT_DIR/<peer>-<config>.json. A peer whose venv is missing (install_ptylab.sh /
# install_ptychi.sh not run) is skipped with a note, as the suite does. PTYLAB_VENV and
# PTYCHI_VENV select the venvs as in the install scripts; PTYCHI_THREADS (default 1) is
# passed to pty-chi as --threads: on a shared 2-core machine torch's default two OpenMP
# threads spin against other processes and ran 10-40x slower than one thread here.
# PEER_CONFIGS (space-separated names, default all) runs only those configurations.
set -euo pipefail

data="$1"
out="$2"
iterations="${3:-50}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ptylab="${PTYLAB_VENV:-$here/.venv-ptylab}/bin/python"
ptychi="${PTYCHI_VENV:-$here/.venv-ptychi}/bin/python"
threads="${PTYCHI_THREADS:-1}"
mkdir -p "$out"

run() {  # run NAME PYTHON RUNNER ARGS...
    local name="$1" python="$2" runner="$3"
    shift 3
    if [ -n "${PEER_CONFIGS:-}" ] && [[ " $PEER_CONFIGS " != *" $name "* ]]; then
        return 0
    fi
    echo "== $name" >&2
    "$python" "$here/$runner" --data "$data" --iterations "$iterations" --out "$out/$name.json" --ramp-history "$@" 2>>"$out/$name.log"
}

if [ -x "$ptylab" ]; then
    run ptylab-epie "$ptylab" ptylab_runner.py --engine epie                      # PtyLab defaults (beta 0.25)
    run ptylab-epie-step1 "$ptylab" ptylab_runner.py --engine epie --object-step 1 --probe-step 1
    run ptylab-mpie "$ptylab" ptylab_runner.py --engine mpie                      # PtyLab defaults
else
    echo "note: PtyLab skipped ($ptylab not found; run benchmarks/peers/install_ptylab.sh)" >&2
fi

if [ -x "$ptychi" ]; then
    run ptychi-epie "$ptychi" ptychi_runner.py --engine epie --threads "$threads"            # pty-chi defaults
    run ptychi-epie-b1-a1 "$ptychi" ptychi_runner.py --engine epie --threads "$threads" --batch-size 1 --object-alpha 1 --probe-alpha 1
    run ptychi-rpie-b10 "$ptychi" ptychi_runner.py --engine rpie --threads "$threads" --batch-size 10
    run ptychi-lsqml "$ptychi" ptychi_runner.py --engine lsqml --threads "$threads"          # pty-chi defaults
    run ptychi-lsqml-b10-uniform "$ptychi" ptychi_runner.py --engine lsqml --threads "$threads" --batch-size 10 --batching uniform
else
    echo "note: pty-chi skipped ($ptychi not found; run benchmarks/peers/install_ptychi.sh)" >&2
fi
