#!/usr/bin/env bash
# The GPU run of benchmarks/gpu_suite.py on a lent machine (docs/gpu.md): wheels carried in
# .whl/ (PyAV, a newer transformers) installed to /tmp/site, qsave imported from src/.
#   bash benchmarks/gpu_run.sh "$OUT"        # writes gpu_suite.json and each part's JSON there
set -euo pipefail
out=${1:?usage: gpu_run.sh OUT_DIR}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers',
    transformers.__version__, 'av', av.__version__)" | tee -a "$out/gpu.txt"
python3 benchmarks/gpu_suite.py --shape 8b --device cuda --out "$out" 2>&1 \
    | tee "$out/gpu_suite.log"
