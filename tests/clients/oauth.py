"""SASL/OAUTHBEARER with confluent-kafka (librdkafka) and kcat, against a broker whose
[oauthbearer] table names a JWKS file with one HS256 key (kid "k1", the secret given here)
and accepts unsecured tokens (tests/security.rs writes both):

  --sasl-plain   SASL_PLAINTEXT listener
  --secret       the HS256 key's secret
  --admin        the admin API (for /metrics)

Checks:
- confluent-kafka with an `oauth_cb` that signs its own JWTs (as an identity provider would):
  a producer (sub alice) and a consumer (sub bob) round-trip records;
- a session lives as long as its token: tokens of 3 s are refreshed by librdkafka and the
  connection re-authenticates (KIP-368) while records keep flowing for 8 s;
- refused with an authentication error, not a hang: a token signed with another secret, one
  from an unknown key id, an expired one, and one with no subject;
- kcat with librdkafka's built-in unsecured JWT (`sasl.oauthbearer.config=principal=dev`)
  produces and reads back.
"""

import base64
import hashlib
import hmac
import json
import subprocess
import time

import common
from common import args, check, check_eq, login_refused, main, trickle, unique

A = args(
    __doc__,
    lambda p: (
        p.add_argument("--sasl-plain", required=True),
        p.add_argument("--secret", required=True),
        p.add_argument("--admin", required=True),
    ),
)


def metric(name):
    return common.metric(A.admin, name)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims, secret=None, kid="k1"):
    header = b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    key = (secret or A.secret).encode()
    sig = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def token_cb(sub, life=3600.0, **kw):
    """An oauth_cb: librdkafka calls it for a token and again before that token expires."""
    issued = []

    def cb(_config):
        now = time.time()
        exp = now + life
        claims = {"sub": sub, "iat": int(now), "exp": exp}
        claims.update(kw.pop("claims", {}))
        issued.append(exp)
        return jwt(claims, kw.get("secret"), kw.get("kid", "k1")), exp, sub or "nobody"

    return cb, issued


def conf(cb):
    return {
        "bootstrap.servers": A.sasl_plain,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "OAUTHBEARER",
        "oauth_cb": cb,
    }


def round_trip():
    from confluent_kafka import Consumer, Producer

    topic = unique("oauth")
    pcb, issued = token_cb("alice", life=3.0)
    p = Producer(conf(pcb))
    ccb, _ = token_cb("bob")
    c = Consumer({**conf(ccb), "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    conns_before = metric("sluice_connections_total")
    auths_before = metric("sluice_authentications_total")
    sent, got = trickle(p, c, topic, 8)
    check_eq(sorted(got), sorted(sent), "records read back")
    # 3 s tokens over 8 s: librdkafka fetched new ones, and the broker took them on the
    # connections it had (a session past its token's end would be cut off).
    check(len(issued) >= 3, f"only {len(issued)} tokens issued for the producer in 8 s")
    conns = metric("sluice_connections_total") - conns_before
    auths = metric("sluice_authentications_total") - auths_before
    check(auths >= conns + 2, f"{auths} authentications on {conns} connections: no re-authentication")
    return len(sent), len(issued), int(conns), int(auths)


def refused():
    now = time.time()
    cases = {
        "another secret": token_cb("eve", secret="not-the-secret")[0],
        "an unknown key id": token_cb("eve", kid="k9")[0],
        "no subject": token_cb("", claims={"sub": ""})[0],
    }

    def expired(_config):
        # librdkafka refuses a token already past its expiry itself; this one says it is
        # good for an hour while its exp claim is an hour gone.
        return jwt({"sub": "eve", "exp": now - 3600}), now + 3600, "eve"

    cases["an expired token"] = expired
    for what, cb in cases.items():
        login_refused(conf(cb), what)
    return len(cases)


def kcat_unsecured():
    topic = unique("oauth-kcat")
    x = [
        "-X", "security.protocol=SASL_PLAINTEXT",
        "-X", "sasl.mechanisms=OAUTHBEARER",
        "-X", "enable.sasl.oauthbearer.unsecure.jwt=true",
        "-X", "sasl.oauthbearer.config=principal=dev",
    ]
    lines = "".join(f"line-{i}\n" for i in range(20))
    subprocess.run(["kcat", "-b", A.sasl_plain, *x, "-P", "-t", topic], input=lines.encode(), check=True, timeout=60)
    out = subprocess.run(
        ["kcat", "-b", A.sasl_plain, *x, "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
        capture_output=True, check=True, timeout=60,
    ).stdout.decode()
    check_eq(out.splitlines(), [f"line-{i}" for i in range(20)], "kcat read back")
    return 20


def body():
    n, tokens, conns, auths = round_trip()
    bad = refused()
    k = kcat_unsecured()
    return (
        f"{n} records with {tokens} producer tokens, {auths} authentications on {conns} "
        f"connections; {bad} bad tokens refused; kcat {k} lines unsecured"
    )


main(body)
