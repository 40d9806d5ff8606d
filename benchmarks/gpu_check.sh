#!/usr/bin/env bash
# The GPU check in one line (see benchmarks/gpu_check.py): bash benchmarks/gpu_check.sh [--budget 480] [--out DIR]
exec python "$(dirname "$0")/gpu_check.py" --device cuda "$@"
