#!/usr/bin/env bash
# Runs the proxy on the demo configuration (conf.d/, TEST-ONLY keys in certs/) and prints a
# ticket for a VNC server on 127.0.0.1:5900 so you can try it at once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
bin=target/release/consolegate
ticket=$("$bin" ticket sign --key certs/engine.key --cert certs/engine.pem \
  --host "${VNC_HOST:-127.0.0.1}" --port "${VNC_PORT:-5900}" --lifetime 3600)
cat <<MSG
A demo ticket for ${VNC_HOST:-127.0.0.1}:${VNC_PORT:-5900}, valid for one hour:

  wss://localhost:6100/$ticket

Make more with: $bin ticket sign --key certs/engine.key --cert certs/engine.pem --host H --port P
MSG
exec "$bin" serve --config conf.d
