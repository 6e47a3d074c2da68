#!/usr/bin/env bash
# Makes the DEMO / TEST-ONLY keys and certificates consolegate's demo and tests use.
# Every certificate carries O="consolegate DEMO - INSECURE" so the proxy can warn when it
# runs on them: their private keys are committed to the repository.
#
#   scripts/gen-certs.sh DIR     (certs/ for the demo, tests/fixtures/pki/ for the tests)
set -euo pipefail
dir=${1:?usage: gen-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
org="/O=consolegate DEMO - INSECURE"
days=3650

# A CA that signs the proxy's TLS certificate; browsers and test clients trust it.
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -subj "$org/CN=consolegate demo CA" -keyout ca.key -out ca.pem 2>/dev/null
# The proxy's TLS certificate for localhost, signed by that CA.
proxy_cert() {
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "$org/CN=localhost" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  cat > "$1.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext" ca.srl
}
proxy_cert proxy
# Upstream allows the key and chain inside SSL_CERTIFICATE: the same material in one file.
cat proxy.pem ca.pem proxy.key > proxy-combined.pem
if [ "${DEMO_ONLY:-}" != 1 ]; then
  # A second certificate for the same name, as after a renewal: the reload tests rotate to it.
  proxy_cert proxy-rotated
fi

# The engine's ticket-signing key pair (oVirt's engine.cer / engine private key).
engine() {
  openssl req -x509 -newkey "rsa:$2" -nodes -sha256 -days "$days" \
    -subj "$org/CN=$1" -keyout "$1.key" -out "$1.pem" 2>/dev/null
}
engine engine 2048

# VNC servers' VeNCrypt (X509Vnc) certificates, for SSL_TARGET_CA tests: one from the test CA
# naming 127.0.0.1, one from the test CA naming another host, one from an unrelated CA.
vnc_cert() { # NAME CA SAN
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "$org/CN=$1" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$days" \
    -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext" "$2.srl"
}
vnc_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
    -subj "$org/CN=consolegate other CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
  vnc_cert vnc ca "DNS:localhost,IP:127.0.0.1,IP:::1"
  vnc_cert vnc-elsewhere ca "DNS:vnc.example"
  vnc_cert vnc-other-ca other-ca "DNS:localhost,IP:127.0.0.1,IP:::1"
}
if [ "${DEMO_ONLY:-}" != 1 ]; then
  engine engine-4096 4096
  engine other-engine 2048
  # A trust file holding two engine certificates, as during key rotation.
  cat other-engine.pem engine.pem > engines-rotation.pem
  vnc_certs
fi
chmod 600 ./*.key
echo "made DEMO/TEST-ONLY keys and certificates in $dir"
