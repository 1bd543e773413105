#!/usr/bin/env bash
# Install mw-gateway as a systemd service on Debian or Raspberry Pi OS. Idempotent: run it again to upgrade;
# your /etc/mw-gateway files are never overwritten.
#
#   sudo systemd/install.sh                 install or upgrade, enable and (re)start the service
#   sudo systemd/install.sh --no-start      install and enable, do not start (edit the config first)
#   sudo systemd/install.sh --uninstall     stop, disable, remove the unit and /opt/mw-gateway
#                                           (keeps /etc/mw-gateway and /var/lib/mw-gateway)
#   sudo systemd/install.sh --uninstall --purge   also remove the config, the state and the user
#
# For packaging and tests: --root DIR installs below DIR (no user, no systemctl), --no-venv skips the venv.
# Optional features: EXTRAS=servicemobility (comma-separated pip extras) installs them into the venv too.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
PREFIX=/opt/mw-gateway
ETC=/etc/mw-gateway
STATE=/var/lib/mw-gateway
UNIT_DIR=/etc/systemd/system
USER_NAME=mw-gateway
PYTHON="${PYTHON:-python3}"
ACTION=install
PURGE=0
START=1
VENV=1

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    --no-start) START=0 ;;
    --no-venv) VENV=0 ;;
    --root) ROOT="${2:?--root needs a directory}"; shift ;;
    --root=*) ROOT="${1#--root=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

say() { echo "mw-gateway: $*"; }
systemd_live() { [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo $0 $*)" >&2
  exit 1
fi

P="$ROOT$PREFIX"; E="$ROOT$ETC"; S="$ROOT$STATE"; U="$ROOT$UNIT_DIR"

if [ "$ACTION" = uninstall ]; then
  if systemd_live; then
    systemctl disable --now mw-gateway.service >/dev/null 2>&1 || true
  fi
  rm -f "$U/mw-gateway.service"
  systemd_live && systemctl daemon-reload
  rm -rf "$P"
  say "removed the service and $PREFIX"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$E" "$S"
    if [ -z "$ROOT" ] && id "$USER_NAME" >/dev/null 2>&1; then
      userdel "$USER_NAME" >/dev/null 2>&1 || true
    fi
    say "purged $ETC, $STATE and the $USER_NAME user"
  else
    say "kept $ETC (configuration) and $STATE (state database); --purge removes them"
  fi
  exit 0
fi

# 1. The system user (no login, no home) -------------------------------------------------------------------
if [ -z "$ROOT" ] && ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir "$STATE" --shell /usr/sbin/nologin \
    --comment "mw-gateway service" "$USER_NAME"
  say "created system user $USER_NAME"
fi

# 2. The virtual environment under /opt/mw-gateway --------------------------------------------------------
install -d -m 0755 "$P"
if [ "$VENV" = 1 ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Python 3.11 or newer is needed ($PYTHON is older); on Debian 12 / Raspberry Pi OS 12 install python3-venv" >&2
    exit 1
  fi
  [ -x "$P/venv/bin/python" ] || "$PYTHON" -m venv "$P/venv"
  "$P/venv/bin/python" -m pip install --quiet --upgrade pip
  "$P/venv/bin/python" -m pip install --quiet --upgrade "$SRC${EXTRAS:+[$EXTRAS]}"
  say "installed $("$P/venv/bin/mw-gateway" --version 2>/dev/null || echo mw-gateway) into $PREFIX/venv"
fi
install -d -m 0755 "$P/share"
install -m 0644 "$SRC/systemd/gateway.yaml.example" "$SRC/systemd/env.example" "$P/share/"
if [ -d "$SRC/docs" ]; then rm -rf "$P/share/docs"; cp -r "$SRC/docs" "$P/share/docs"; fi

# 3. /etc/mw-gateway: config and rules from the examples, secrets file 0600 (never overwritten) -------------
install -d -m 0750 "$E"
if [ ! -e "$E/gateway.yaml" ]; then
  install -m 0640 "$SRC/systemd/gateway.yaml.example" "$E/gateway.yaml"
  say "wrote $ETC/gateway.yaml from the example: edit it"
fi
if [ ! -e "$E/env" ]; then
  install -m 0600 "$SRC/systemd/env.example" "$E/env"
  say "wrote $ETC/env (mode 0600): put the API key and webhook secret there"
fi
chmod 0600 "$E/env"
if [ ! -d "$E/rules" ]; then
  install -d -m 0750 "$E/rules"
  for rules in press1.yaml pump7.yaml; do  # the two machines of the example gateway.yaml
    if [ -f "$SRC/rules/$rules" ]; then install -m 0640 "$SRC/rules/$rules" "$E/rules/"; fi
  done
  say "wrote example rules to $ETC/rules/"
fi
install -d -m 0750 "$S"
if [ -z "$ROOT" ]; then
  chown root:"$USER_NAME" "$E" "$E/gateway.yaml" "$E/rules"
  find "$E/rules" -type f -exec chown root:"$USER_NAME" {} +
  chown root:root "$E/env"
  chown "$USER_NAME":"$USER_NAME" "$S"
fi

# 4. The unit ------------------------------------------------------------------------------------------------
install -d -m 0755 "$U"
install -m 0644 "$SRC/systemd/mw-gateway.service" "$U/mw-gateway.service"
if systemd_live; then
  systemctl daemon-reload
  systemctl enable mw-gateway.service >/dev/null
  if [ "$START" = 1 ]; then
    if (set -a; . "$E/env"; set +a; "$P/venv/bin/mw-gateway" check -c "$E/gateway.yaml") >/dev/null 2>&1; then
      systemctl restart mw-gateway.service
      say "service enabled and (re)started: journalctl -u mw-gateway -f"
    else
      say "service enabled but NOT started: fix the config first (sudo -u $USER_NAME $PREFIX/venv/bin/mw-gateway check -c $ETC/gateway.yaml), then: systemctl start mw-gateway"
    fi
  else
    say "service enabled; start it with: systemctl start mw-gateway"
  fi
else
  say "unit installed in $UNIT_DIR (systemd not running here: enable it with systemctl enable --now mw-gateway)"
fi
