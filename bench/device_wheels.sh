#!/usr/bin/env bash
# Fill the ignored .whl/ folder with what the device's image lacks for training
# (bench/device_train.sh): pydantic and pydantic-settings with their needs. The image has
# torch, numpy, scipy, Pillow, typer and rich; training needs no librosa, and PyAV is
# stood in for there (see device_train.sh). Run here, once per checkout; carry `.whl`.
set -eu
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 pydantic-settings==2.16.3 python-dotenv==1.2.4
du -sh .whl
