#!/usr/bin/env bash
# Install what the tests need (the test extras; dcraw and exiftool, the independent DNG readers,
# from Debian's packages when missing), then run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
need=()
command -v dcraw >/dev/null || need+=(dcraw)
command -v exiftool >/dev/null || need+=(libimage-exiftool-perl)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec python -m pytest -q "$@"
