#!/usr/bin/env bash
# Makes sure the Debian packages the test suite needs are present.
# As root it installs what is missing; otherwise it prints the one command to run.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ "${MW_SKIP_BROWSER:-0}" != "1" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
command -v node >/dev/null 2>&1 || need+=(nodejs)  # the interop tests' independent implementations (npm)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # tests/cmms/test_trust.py: `openssl rehash` of a CA folder
# the interop tests' libmodbus server (tests/interop/modbus_server.c), compiled by the tests
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/include/modbus/modbus.h ] || need+=(libmodbus-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ]; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The broker must not run as a system service: the tests start their own on free ports.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
else
  echo "missing Debian packages: ${need[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
