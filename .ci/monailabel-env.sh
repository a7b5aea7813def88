#!/usr/bin/env bash
# Builds the MONAI Label virtual environment .venv-monailabel/ (apart from the main .venv: MONAI Label 0.8.5
# needs numpy < 2, pydicom 2 and its own torch/torchvision pair). Does nothing when it is already complete.
#   bash .ci/monailabel-env.sh            # 7 to 13 minutes (790 s measured on 2 cores) and 8 GB on a fresh machine (CUDA torch wheels)
# The pins: monailabel 0.8.5 accepts monai >= 1.4, so pip keeps monai 1.6.1, the version the bundles pin;
# the DICOM packages are the versions monailabel 0.8.5 works with; torch 2.14.1 / torchvision 0.29.1 are a
# matching pair (a CUDA build, which runs on the CPU too).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-monailabel
stamp=$venv/.complete
pins=(torch==2.14.1 torchvision==0.29.1 monailabel==0.8.5 pydicom==2.4.4 pynetdicom==2.0.2 dicomweb-client==0.59.1 pytest)
# rebuilt when the pins or lesionseg's own requirements (setup.cfg) change
want="${pins[*]} setup.cfg:$(sha256sum setup.cfg | cut -c1-16)"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv is up to date"
    exit 0
fi
start=$SECONDS
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "${pins[@]}" -e .
"$venv/bin/python" - <<'PY'
import monai, monailabel, numpy, torch
assert monailabel.__version__.startswith("0.8.5"), monailabel.__version__
assert monai.__version__ == "1.6.1", f"the bundles pin monai 1.6.1, MONAI Label's environment has {monai.__version__}"
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
print(f"monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")
PY
echo "$want" > "$stamp"
echo "built $venv in $((SECONDS - start)) s"
