#!/usr/bin/env bash
# The whole console in one command: installs what is missing, starts TigerVNC's Xvnc with a
# recognisable screen (a blue desktop with a message window), builds the console page and the
# proxy, prints a console URL for your browser, and runs the proxy on the demo configuration
# (conf.d/, TEST-ONLY keys in certs/) until Ctrl-C, which stops the VNC server too.
#
#   scripts/demo.sh         VNC_PASSWORD=... and VNC_PORT=... (default 5900) to change them
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-e2e.sh --demo
cargo build --release --locked
scripts/build-web.sh target/web
bin=target/release/consolegate
port=${VNC_PORT:-5900}
password=${VNC_PASSWORD:-consolegate}

work=$(mktemp -d)
xvnc_pid=""
cleanup() {
  [ -n "$xvnc_pid" ] && kill "$xvnc_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free X display number.
display=20
while [ -e "/tmp/.X$display-lock" ] || [ -e "/tmp/.X11-unix/X$display" ]; do
  display=$((display + 1))
done
printf '%s' "$password" | vncpasswd -f > "$work/passwd"
chmod 600 "$work/passwd"
Xvnc ":$display" -rfbport "$port" -interface 127.0.0.1 -localhost -nolisten tcp \
  -geometry 1024x640 -depth 24 -desktop "consolegate demo" \
  -SecurityTypes VncAuth -PasswordFile "$work/passwd" > "$work/Xvnc.log" 2>&1 &
xvnc_pid=$!
for _ in $(seq 100); do
  grep -q "Listening for VNC connections" "$work/Xvnc.log" && break
  kill -0 "$xvnc_pid" 2>/dev/null || { cat "$work/Xvnc.log" >&2; echo "demo: Xvnc did not start (is port $port free? set VNC_PORT)" >&2; exit 1; }
  sleep 0.1
done
export DISPLAY=":$display"
xsetroot -solid '#1e90ff' -cursor_name left_ptr
xmessage -center -buttons "" \
  "consolegate demo: this is the VNC server's screen, on display :$display, port $port" &

# The demo configuration, plus the console page, which re-attaches after a network blip.
cat > "$work/web.conf" <<CONF
WEB_ROOT=$PWD/target/web
RECONNECT_GRACE_PERIOD=30
CONF
url=$("$bin" ticket sign --key certs/engine.key --cert certs/engine.pem \
  --host 127.0.0.1 --port "$port" --lifetime 3600 --url https://localhost:6100/console.html)
cat <<MSG

  Open this console (the ticket is valid for one hour; the VNC password is "$password"):

    $url

  The proxy's certificate is a DEMO one: trust certs/ca.pem in your browser, or accept the
  warning once at https://localhost:6100/ first. The proxy listens on 127.0.0.1 only.
  More consoles: $bin ticket sign --key certs/engine.key --cert certs/engine.pem \\
      --host 127.0.0.1 --port $port --url https://localhost:6100/console.html

MSG
"$bin" serve --config conf.d --config "$work/web.conf"
