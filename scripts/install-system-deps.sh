#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks run for real, only those missing.
set -euo pipefail
# Services the suite runs for real, chromium for the dashboard's browser test (driven by
# Playwright, which then downloads no browser of its own), nftables for the lab's network-cut
# chaos test (tests/lab/test_chaos_netcut.py), prometheus for its promtool
# (tests/integration/test_monitoring_rules.py checks and unit-tests monitoring/), plus what the namespace lab needs
# (scripts/requirements-apt.txt). Extra packages may be named on the command line (make bench adds wrk).
wanted=(mariadb-server haproxy supervisor chromium nftables prometheus "$@")
while read -r pkg; do
  [ -n "$pkg" ] && [ "${pkg:0:1}" != "#" ] && wanted+=("$pkg")
done < "$(dirname "$0")/requirements-apt.txt"
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: need root to apt-get install: ${missing[*]}" >&2
  exit 1
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# Only promtool is wanted: do not leave the Prometheus server the package enables (and starts,
# where systemd runs) enabled; lab hosts boot this machine's /etc (the lab masks it as well).
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    systemctl disable prometheus >/dev/null 2>&1 || true
  fi
fi
