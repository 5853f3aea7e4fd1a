#!/usr/bin/env bash
# The comparison environment: SpikingJelly 2.0.0, for the sj-* rows of the benchmarks and the
# SpikingJelly parity tests. Installs into the `python` on PATH (activate your environment first).
#
# spikingjelly's own requirements pull torchvision, torchaudio and a CUDA torch (several GB, and a
# different torch than yours), so it is installed without them (--no-deps), together with the two
# light packages its activation_based modules import. It goes in last: a later `pip install` that
# touches one of its requirements ends with pip's "dependency resolver ... spikingjelly 2.0.0
# requires torchvision, which is not installed" message, which is expected and harmless here.
set -euo pipefail
python -m pip install loguru packaging
python -m pip install --no-deps spikingjelly==2.0.0
python -c "import spikingjelly.activation_based.neuron; print('spikingjelly', __import__('importlib.metadata').metadata.version('spikingjelly'), 'ready')"
