#!/usr/bin/env bash
# Installs consolegate as a systemd service on this host. Idempotent: run it again to
# upgrade the binary and the unit; an existing configuration is never overwritten.
#
#   scripts/install.sh [--binary PATH] [--prefix DIR] [--no-user]
#
#   --binary PATH  install this binary instead of building the release one (cargo)
#   --prefix DIR   the binary goes to DIR/bin (default /usr/local)
#   --no-user      do not create the consolegate system user
#   DESTDIR=ROOT   install under ROOT instead of / (packaging, tests); no user is created
#                  and systemd is not told
#
# Layout: PREFIX/bin/consolegate, /etc/consolegate/consolegate.conf (+ consolegate.conf.d/),
# /etc/consolegate/certs/ (certificates and keys, group consolegate),
# /etc/systemd/system/consolegate.service.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local
binary=""
create_user=1
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --no-user) create_user=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage >&2; exit 64 ;;
  esac
done
root=${DESTDIR:-}
root=${root%/}
if [ -n "$root" ]; then create_user=0; fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or set DESTDIR to install into a directory)" >&2
  exit 1
fi

if [ -z "$binary" ]; then
  (cd "$repo" && scripts/setup.sh && cargo build --release --locked)
  binary=$repo/target/release/consolegate
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }
"$binary" --version >/dev/null || { echo "install.sh: $binary does not run" >&2; exit 1; }

user=consolegate
if [ "$create_user" = 1 ] && ! getent passwd "$user" >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "consolegate console proxy" "$user"
  echo "created system user $user"
fi
group=root
if [ -z "$root" ] && getent group "$user" >/dev/null; then group=$user; fi

bindir=$root$prefix/bin
confdir=$root/etc/consolegate
unitdir=$root/etc/systemd/system
install -d -m 0755 "$bindir" "$unitdir"
install -d -m 0750 -g "$group" "$confdir" "$confdir/consolegate.conf.d" "$confdir/certs"

# Replace the binary by renaming, so a running service keeps its old file until restarted.
install -m 0755 "$binary" "$bindir/.consolegate.new"
mv -f "$bindir/.consolegate.new" "$bindir/consolegate"
echo "installed $prefix/bin/consolegate ($("$bindir/consolegate" --version))"

if [ -e "$confdir/consolegate.conf" ]; then
  echo "kept the existing /etc/consolegate/consolegate.conf"
else
  install -m 0640 -g "$group" "$repo/packaging/consolegate.conf" "$confdir/consolegate.conf"
  echo "installed /etc/consolegate/consolegate.conf"
fi

unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s|/usr/local/bin/consolegate|$prefix/bin/consolegate|g" \
  "$repo/packaging/systemd/consolegate.service" > "$unit"
if cmp -s "$unit" "$unitdir/consolegate.service"; then
  echo "kept /etc/systemd/system/consolegate.service (unchanged)"
else
  install -m 0644 "$unit" "$unitdir/consolegate.service"
  echo "installed /etc/systemd/system/consolegate.service"
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
cat <<MSG

Next: put the proxy's certificate and key and the engine certificate in /etc/consolegate/certs/
(group $group, mode 0640), check with
  $prefix/bin/consolegate check-config --config /etc/consolegate/consolegate.conf
then: systemctl enable --now consolegate
MSG
