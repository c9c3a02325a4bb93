#!/bin/sh
# .whl/: what bench/gpu.py needs on the GPU machine beyond its own python3 3.12 with CUDA torch (it has no registry):
# DeepSpeed (built here as a pure-Python wheel: its ops compile just in time), PEFT, orjson, boto3, neosft's pinned
# transformers and accelerate, and their needs that machine lacks. Versions come from ci/constraints.txt. Under 64 MiB.
#     sh bench/wheelhouse.sh
set -eu
cd "$(dirname "$0")/.."
PIN() { grep -i "^$1==" ci/constraints.txt; }
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "$(PIN peft)" "$(PIN orjson)" "$(PIN boto3)" "$(PIN botocore)" "$(PIN s3transfer)" "$(PIN jmespath)" \
  "$(PIN hjson)" "$(PIN pydantic)" "$(PIN pydantic-core)" "$(PIN annotated-types)" "$(PIN typing-inspection)" \
  "$(PIN transformers)" "$(PIN accelerate)"
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "$(PIN deepspeed)"
size=$(du -sm .whl | cut -f1)
echo "wrote .whl/: $(ls .whl | wc -l) wheels, ${size} MiB"
[ "$size" -lt 64 ] || { echo "error: .whl/ is ${size} MiB, over the 64 MiB a device call carries" >&2; exit 2; }
