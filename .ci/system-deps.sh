#!/usr/bin/env bash
# Install Debian packages used by the browser (chromium) and napari (Xvfb + Qt xcb) tests.
# Idempotent; quiet when everything is present. Outside CI never fatal (those tests skip loudly if absent);
# under CI (the CI environment variable set, as .ci/run does) a package that cannot be installed is an error,
# since the tests that need it would fail anyway.
set -u
pkgs=(chromium xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
      libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 libgl1
      libdbus-1-3 libfontconfig1)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/tmp/emkit-apt.log 2>&1 \
      || { echo "WARNING: apt-get failed (see /tmp/emkit-apt.log); browser/napari tests will skip (fail under CI)"; failed=1; }
  else
    echo "WARNING: cannot install ${need[*]} (not root or no apt-get); browser/napari tests will skip (fail under CI)"
    failed=1
  fi
fi
case "${CI:-}" in ""|0|false|no) exit 0 ;; esac
exit "${failed:-0}"
