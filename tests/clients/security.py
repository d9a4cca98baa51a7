"""TLS and SASL with confluent-kafka (librdkafka) and kafka-python, against a broker with
these listeners (tests/security.rs writes the config and the certificates):

  --sasl-ssl      SASL_SSL: SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN over TLS
  --sasl-plain    SASL_PLAINTEXT
  --mtls          SSL with client_auth = "required"
  --certs DIR     ca.pem, client.pem/.key (subject CN=client1,OU=eng,O=acme: a super user),
                  broker.pem/.key (replaced here to check the reload)

Users: admin (SCRAM-SHA-256, super user), alice (SCRAM-SHA-512). connections_max_reauth_ms is
2000, so a client that does not re-authenticate (KIP-368) is cut off within seconds.

Checks:
- confluent-kafka produces and consumes over SASL_SSL with SCRAM-SHA-256 for 8 s, across
  several session lifetimes, on the same connections (re-authentication, counted in metrics);
- kafka-python round-trips with SCRAM-SHA-512 over SASL_SSL and PLAIN over SASL_PLAINTEXT,
  confluent-kafka with PLAIN over SASL_SSL;
- a wrong password and an unknown user fail with an authentication error, not a hang;
- the client-certificate principal is a super user: over mTLS, AdminClient creates user carol
  (AlterUserScramCredentials), who then logs in; alice, not a super user, is refused with
  CLUSTER_AUTHORIZATION_FAILED; describe lists the users and mechanisms;
- a raw socket that sends Metadata before authenticating, or a 1 MB frame, is disconnected;
- batches far over 16 KiB, fetched over TLS from their segment files (read a megabyte at a
  time as they are written), reach confluent-kafka and kafka-python byte for byte, with large
  and small fetch limits, and the broker counts the bytes it sent from files;
- a replaced certificate is served to new connections without a restart.
"""

import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import common
from common import (args, check, check_eq, confluent_read_all, fail, kafka_python_read_all,
                    login_refused, main, trickle, unique, varied_value)

A = args(
    __doc__,
    lambda p: (
        p.add_argument("--sasl-ssl", required=True),
        p.add_argument("--sasl-plain", required=True),
        p.add_argument("--mtls", required=True),
        p.add_argument("--certs", required=True),
        p.add_argument("--admin", required=True),
    ),
)
CA = os.path.join(A.certs, "ca.pem")


def metric(name):
    return common.metric(A.admin, name)


def confluent(mech, user, password, server=None, protocol="SASL_SSL"):
    c = {
        "bootstrap.servers": server or A.sasl_ssl,
        "security.protocol": protocol,
        "sasl.mechanism": mech,
        "sasl.username": user,
        "sasl.password": password,
    }
    if "SSL" in protocol:
        c["ssl.ca.location"] = CA
    return c


def round_trip_with_reauthentication():
    from confluent_kafka import Consumer, Producer

    topic = unique("sec")
    conf = confluent("SCRAM-SHA-256", "admin", "adminpw")
    p = Producer(conf)
    c = Consumer({**conf, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    conns_before = metric("sluice_connections_total")
    auths_before = metric("sluice_authentications_total")
    sent, got = trickle(p, c, topic, 8)
    check_eq(got, sent, "records consumed over SASL_SSL")
    conns = metric("sluice_connections_total") - conns_before
    auths = metric("sluice_authentications_total") - auths_before
    # 8 s at a 2 s session lifetime: every connection re-authenticated several times.
    check(auths >= conns + 3, f"{auths} authentications on {conns} connections: no re-authentication")
    return len(sent), int(conns), int(auths)


def kafka_python_round_trips():
    from kafka import KafkaConsumer, KafkaProducer

    out = []
    for mech, user, pw, server, proto in [
        ("SCRAM-SHA-512", "alice", "alicepw", A.sasl_ssl, "SASL_SSL"),
        ("PLAIN", "alice", "alicepw", A.sasl_plain, "SASL_PLAINTEXT"),
    ]:
        kw = dict(
            bootstrap_servers=server,
            security_protocol=proto,
            sasl_mechanism=mech,
            sasl_plain_username=user,
            sasl_plain_password=pw,
        )
        if proto == "SASL_SSL":
            kw["ssl_cafile"] = CA
        topic = unique("kp")
        prod = KafkaProducer(**kw)
        for i in range(5):
            prod.send(topic, f"{mech}-{i}".encode()).get(timeout=15)
        prod.close()
        cons = KafkaConsumer(topic, group_id=unique("kg"), auto_offset_reset="earliest", consumer_timeout_ms=8000, **kw)
        vals = [m.value for m in cons]
        cons.close()
        check_eq(vals, [f"{mech}-{i}".encode() for i in range(5)], f"kafka-python {mech} over {proto}")
        out.append(mech)
    return out


def confluent_plain_over_ssl():
    """PLAIN is only safe over TLS: confluent-kafka's SASL_SSL with PLAIN, as alice."""
    from confluent_kafka import Producer

    topic = unique("plain")
    conf = confluent("PLAIN", "alice", "alicepw")
    p = Producer(conf)
    sent = [f"plain-{i}".encode() for i in range(5)]
    for v in sent:
        p.produce(topic, v, partition=0)
    check(p.flush(20) == 0, "confluent-kafka PLAIN over SASL_SSL: records not acknowledged")
    got = confluent_read_all(conf, topic, 1, len(sent))
    check_eq(got, sent, "confluent-kafka PLAIN over SASL_SSL")
    return "PLAIN over SASL_SSL"


def large_batches_over_tls():
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    parts = 3
    topic = unique("tls-files")
    conf = confluent("SCRAM-SHA-256", "admin", "adminpw")
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, parts, 1)])[topic].result(30)
    before = metric("sluice_fetch_sendfile_bytes_total")
    p = Producer({**conf, "linger.ms": 200, "batch.size": 1000000, "compression.type": "none"})
    sent = set()
    failed = []

    def delivered(err, _msg):
        if err:
            failed.append(err)

    for i in range(1500):
        v = varied_value("tls", i)
        p.produce(topic, v, partition=i % parts, on_delivery=delivered)
        sent.add(v)
        if i % 300 == 0:
            p.poll(0)
    check_eq(p.flush(30), 0, "records left undelivered over SASL_SSL")
    check(not failed, f"{len(failed)} records refused over SASL_SSL, e.g. {failed[:1]}")

    small = {"fetch.message.max.bytes": 40000, "fetch.max.bytes": 100000, "message.max.bytes": 100000}
    kafka_python = dict(
        bootstrap_servers=A.sasl_ssl,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="admin",
        sasl_plain_password="adminpw",
        ssl_cafile=CA,
        max_partition_fetch_bytes=1048576,
    )
    reads = [
        ("confluent-kafka", confluent_read_all(conf, topic, parts, len(sent))),
        ("confluent-kafka, small fetches", confluent_read_all({**conf, **small}, topic, parts, len(sent))),
        ("kafka-python", kafka_python_read_all(kafka_python, topic, parts, len(sent))),
    ]
    for who, got in reads:
        check_eq(len(got), len(sent), f"{who}: records read over TLS")
        check(set(got) == sent, f"{who}: records changed on the way over TLS")
    from_files = metric("sluice_fetch_sendfile_bytes_total") - before
    total = sum(len(v) for v in sent)
    check(from_files >= len(reads) * total, f"only {from_files:.0f} bytes went out from files for {len(reads)} reads of {total}")
    return f"{len(sent)} records in large batches read back {len(reads)} ways over TLS, {from_files / 1e6:.1f} MB from files"


def bad_credentials_fail():
    for user, pw in [("admin", "wrong"), ("nobody", "adminpw")]:
        login_refused(confluent("SCRAM-SHA-256", user, pw), f"{user}/{pw}")
    return "refused"


def certificate_principal_is_a_super_user():
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )
    from confluent_kafka import KafkaException, Producer

    mtls = AdminClient(
        {
            "bootstrap.servers": A.mtls,
            "security.protocol": "SSL",
            "ssl.ca.location": CA,
            "ssl.certificate.location": os.path.join(A.certs, "client.pem"),
            "ssl.key.location": os.path.join(A.certs, "client.key"),
        }
    )
    up = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"carolpw")
    for _, f in mtls.alter_user_scram_credentials([up]).items():
        f.result(timeout=15)
    # carol logs in with the password set over the wire.
    p = Producer(confluent("SCRAM-SHA-256", "carol", "carolpw"))
    p.produce(unique("carol"), b"hi")
    check_eq(p.flush(15), 0, "carol's produce")
    described = mtls.describe_user_scram_credentials().result(timeout=15)
    check(set(described) >= {"admin", "alice", "carol"}, f"described users: {sorted(described)}")
    check_eq(
        [(i.mechanism, i.iterations) for i in described["alice"].scram_credential_infos],
        [(ScramMechanism.SCRAM_SHA_512, 8192)],
        "alice's credentials",
    )
    # alice is authenticated but not a super user.
    alice = AdminClient(confluent("SCRAM-SHA-512", "alice", "alicepw"))
    up = UserScramCredentialUpsertion("mallory", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"x")
    try:
        for _, f in alice.alter_user_scram_credentials([up]).items():
            f.result(timeout=15)
        fail("alice created a user")
    except KafkaException as e:
        check("CLUSTER_AUTHORIZATION_FAILED" in str(e), f"alice's refusal: {e}")
    return "carol created over mTLS; alice refused"


def frame(api, version, body=b""):
    header = struct.pack(">hhih", api, version, 7, -1)
    return struct.pack(">i", len(header) + len(body)) + header + body


def closed(sock):
    sock.settimeout(10)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def unauthenticated_requests_are_cut_off():
    host, port = A.sasl_plain.rsplit(":", 1)
    # Metadata v1 (no topics array = all) before any SASL exchange.
    s = socket.create_connection((host, int(port)))
    s.sendall(frame(3, 1, struct.pack(">i", -1)))
    check(closed(s), "Metadata before authentication did not close the connection")
    # A 1 MB frame before authentication: over the 512 KiB limit, refused on its length.
    s = socket.create_connection((host, int(port)))
    try:
        s.sendall(struct.pack(">i", 1 << 20) + b"\0" * 4096)
    except (ConnectionResetError, BrokenPipeError):
        pass
    check(closed(s), "a 1 MB unauthenticated frame did not close the connection")
    # ApiVersions is allowed.
    s = socket.create_connection((host, int(port)))
    s.sendall(frame(18, 0))
    s.settimeout(10)
    (n,) = struct.unpack(">i", s.recv(4))
    check(n > 10, "ApiVersions answered before authentication")
    s.close()
    return "closed"


def certificate_reload():
    host, port = A.sasl_ssl.rsplit(":", 1)
    before = ssl.get_server_certificate((host, int(port)))
    d = A.certs
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/new.key", "-out", f"{d}/new.csr", "-subj", "/CN=reloaded"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", f"{d}/new.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key", "-CAcreateserial",
         "-days", "2", "-out", f"{d}/new.pem", "-extfile", f"{d}/san.ext"],
        check=True,
        capture_output=True,
    )
    # Key first, then certificate, each by rename: a handshake in between keeps the old pair.
    os.replace(f"{d}/new.key", f"{d}/broker.key")
    os.replace(f"{d}/new.pem", f"{d}/broker.pem")
    want = open(f"{d}/broker.pem").read()
    deadline = time.time() + 10
    while time.time() < deadline:
        now = ssl.get_server_certificate((host, int(port)))
        if now.strip() == want.strip():
            break
        time.sleep(0.3)
    else:
        fail("the replaced certificate was not served")
    check(now != before, "certificate unchanged")
    # And clients still connect and authenticate through it.
    from confluent_kafka import Producer

    p = Producer(confluent("SCRAM-SHA-512", "alice", "alicepw"))
    p.produce(unique("after-reload"), b"x")
    check_eq(p.flush(15), 0, "produce after the reload")
    return "reloaded"


def body():
    n, conns, auths = round_trip_with_reauthentication()
    kp = kafka_python_round_trips()
    plain = confluent_plain_over_ssl()
    bad = bad_credentials_fail()
    su = certificate_principal_is_a_super_user()
    cut = unauthenticated_requests_are_cut_off()
    large = large_batches_over_tls()
    rl = certificate_reload()
    return (
        f"{n} records over SASL_SSL with {auths} authentications on {conns} connections; "
        f"kafka-python {kp}; confluent-kafka {plain}; bad credentials {bad}; {su}; unauthenticated {cut}; {large}; "
        f"certificate {rl}"
    )


main(body)
