#!/usr/bin/env bash
# kcat (librdkafka 2.0.2) on secured listeners (see tests/security.rs for the broker's setup):
# SCRAM-SHA-512 over SASL_SSL (produce, then read back), PLAIN over SASL_PLAINTEXT, SSL with a
# client certificate, and a wrong password refused with an authentication error.
set -euo pipefail

name=security_kcat.sh
fail() { echo "FAIL $name: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) shift 2 ;;
    --sasl-ssl) sasl_ssl=$2; shift 2 ;;
    --sasl-plain) sasl_plain=$2; shift 2 ;;
    --mtls) mtls=$2; shift 2 ;;
    --certs) certs=$2; shift 2 ;;
    *) echo "usage: $name --sasl-ssl H:P --sasl-plain H:P --mtls H:P --certs DIR" >&2; exit 2 ;;
  esac
done
command -v kcat >/dev/null || fail "kcat is not installed (apt-get install kcat)"

topic="kcat-sec-$$-$(date +%s)"
scram=(-X security.protocol=SASL_SSL -X "ssl.ca.location=$certs/ca.pem" -X sasl.mechanisms=SCRAM-SHA-512
  -X sasl.username=alice -X sasl.password=alicepw)
seq 1 50 | sed 's/^/line-/' | kcat -b "$sasl_ssl" "${scram[@]}" -P -t "$topic" || fail "produce over SASL_SSL"
got=$(timeout 60 kcat -b "$sasl_ssl" "${scram[@]}" -C -t "$topic" -o beginning -e -q | wc -l)
[ "$got" = 50 ] || fail "read $got of 50 lines over SASL_SSL"

plain=(-X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN -X sasl.username=admin -X sasl.password=adminpw)
got=$(timeout 60 kcat -b "$sasl_plain" "${plain[@]}" -C -t "$topic" -o beginning -e -q | wc -l)
[ "$got" = 50 ] || fail "read $got of 50 lines with PLAIN"

tls=(-X security.protocol=SSL -X "ssl.ca.location=$certs/ca.pem" -X "ssl.certificate.location=$certs/client.pem"
  -X "ssl.key.location=$certs/client.key")
timeout 60 kcat -b "$mtls" "${tls[@]}" -L -t "$topic" | grep -q "partition 0" || fail "metadata over SSL with a client certificate"
# The advertised address is the listener's own: kcat followed it to the same port.
timeout 60 kcat -b "$mtls" "${tls[@]}" -L | grep -q "at $mtls" || fail "the SSL listener advertises another address"

if out=$(timeout 60 kcat -b "$sasl_ssl" -X security.protocol=SASL_SSL -X "ssl.ca.location=$certs/ca.pem" \
    -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=alice -X sasl.password=wrong -L 2>&1); then
  fail "a wrong password was let in"
fi
echo "$out" | grep -q "invalid credentials" || fail "no authentication error for a wrong password: $out"

echo "OK $name: SCRAM-SHA-512 over SASL_SSL, PLAIN, mTLS, wrong password refused"
