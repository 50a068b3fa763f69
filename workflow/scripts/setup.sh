#!/usr/bin/env bash
# Set up likeness on a fresh machine: system libraries, then a virtual environment in .venv/.
#   bash workflow/scripts/setup.sh          the workflow's packages
#   bash workflow/scripts/setup.sh --dev    plus what the tests, the demo's stand-in tagger and lint need
set -euo pipefail
cd "$(dirname "$0")/../.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

# System libraries: mysqlclient compiles against MariaDB's client library (pkg-config finds it).
missing=()
pkg-config --exists libmariadb 2>/dev/null || missing+=(libmariadb-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v gcc >/dev/null || missing+=(gcc)
# git fetches kohya sd-scripts when a training first launches (train.sd_scripts: auto), and the tests clone.
command -v git >/dev/null || missing+=(git)
# libjpeg-turbo's TurboJPEG library: the crop stage decodes only the region around a face with it.
ldconfig -p 2>/dev/null | grep -q 'libturbojpeg\.so\.0' || missing+=(libturbojpeg0)
# libjpeg-turbo's headers: the crop stage's C helper decodes only the rows a face crop needs.
[ -f /usr/include/jpeglib.h ] || missing+=(libjpeg62-turbo-dev)
# For the tests and benchmarks only: ImageMagick makes CMYK test photos and is the benchmark's baseline.
[ -n "$extras" ] && ! [ -x /usr/bin/convert ] && missing+=(imagemagick)
# For the tests only: the Immich tests run on a real PostgreSQL server (.ci/run starts it).
[ -n "$extras" ] && ! command -v pg_ctlcluster >/dev/null && missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these system packages first: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup: likeness needs Python 3.11 (python3.11 not found)" >&2
  exit 1
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"

# The crop stage's row-skipping JPEG decoder (workflow/likeness/crop/_jpegskip.c), built in place so that the
# workflow's own copy of the package imports it. Without it, crops fall back to slower decodes.
include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -O2 -Wall -shared -fPIC -I"$include" workflow/likeness/crop/_jpegskip.c -ljpeg -o "workflow/likeness/crop/_jpegskip$suffix"
echo "setup: ready (.venv/bin/snakemake)"
