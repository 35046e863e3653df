#!/usr/bin/env bash
# Installs what posenc's build, tests, examples and benchmarks need on Debian/Ubuntu (idempotent:
# does nothing when everything is there). Run as root, or it uses sudo. Extra packages may be named
# as arguments (CI: `install-deps.sh clang` for the clang build of the tests).
set -euo pipefail
packages=(cmake g++ make python3 libeigen3-dev catch2 libbenchmark-dev nlohmann-json3-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "posenc: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
