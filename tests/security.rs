//! TLS and SASL end to end: a broker with a SASL_SSL, an SSL (client certificates required)
//! and a SASL_PLAINTEXT listener beside its plaintext one, certificates made by openssl in
//! the test, users made with `sluice user`, and real clients on every listener: confluent-kafka,
//! kafka-python, kcat, kafkajs, the Java client and sluice's own CLI.
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "security" path = "../tests/security.rs"`.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    free_port, require, require_java_clients, require_kafkajs, require_kcat,
    require_python_modules, run_ok, Broker, Script,
};

const LIMIT: Duration = Duration::from_secs(300);

fn openssl(dir: &Path, args: &[&str]) {
    let out = support::command("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a broker certificate for 127.0.0.1/localhost and a client certificate (subject
/// CN=client1,OU=eng,O=acme), as PEM files in `dir`.
fn make_certificates(dir: &Path) {
    require(
        "openssl",
        &["version"],
        "openssl",
        "apt-get install openssl",
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.pem -subj /CN=sluice-test-ca",
        "req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=localhost",
        "x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out broker.pem -extfile san.ext",
        "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /O=acme/OU=eng/CN=client1",
        "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem -extfile client.ext",
    ] {
        openssl(dir, &args.split(' ').collect::<Vec<_>>());
    }
}

struct Secured {
    broker: Broker,
    certs: tempfile::TempDir,
    sasl_ssl: String,
    sasl_plain: String,
    mtls: String,
}

fn sluice(args: &[&str]) -> std::process::Output {
    support::command(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice")
}

fn sluice_ok(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "sluice {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start() -> Secured {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let c = certs.path().display().to_string();
    let (a, b, m) = (free_port(), free_port(), free_port());
    let toml = format!(
        r#"
super_users = ["User:admin", "User:CN=client1,OU=eng,O=acme"]
connections_max_reauth_ms = 2000

[[listeners]]
name = "SECURE"
address = "127.0.0.1:{a}"
security = "SASL_SSL"
cert = "{c}/broker.pem"
key = "{c}/broker.key"

[[listeners]]
name = "MTLS"
address = "127.0.0.1:{m}"
security = "SSL"
cert = "{c}/broker.pem"
key = "{c}/broker.key"
client_ca = "{c}/ca.pem"
client_auth = "required"

[[listeners]]
name = "SASL"
address = "127.0.0.1:{b}"
security = "SASL_PLAINTEXT"

# The Java client's own unsecured tokens (java_client_over_sasl_ssl).
[oauthbearer]
unsecured = true
"#
    );
    let broker = Broker::start_prepared(&toml, |data| {
        let d = data.to_str().unwrap();
        sluice_ok(&[
            "user",
            "create",
            "admin",
            "--password",
            "adminpw",
            "--data-dir",
            d,
        ]);
        sluice_ok(&[
            "user",
            "create",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password",
            "alicepw",
            "--data-dir",
            d,
        ]);
    });
    Secured {
        broker,
        certs,
        sasl_ssl: format!("127.0.0.1:{a}"),
        sasl_plain: format!("127.0.0.1:{b}"),
        mtls: format!("127.0.0.1:{m}"),
    }
}

impl Secured {
    fn args<'a>(&'a self, certs: &'a str) -> Vec<&'a str> {
        vec![
            "--sasl-ssl",
            &self.sasl_ssl,
            "--sasl-plain",
            &self.sasl_plain,
            "--mtls",
            &self.mtls,
            "--certs",
            certs,
        ]
    }
}

/// confluent-kafka and kafka-python: SCRAM-SHA-256/512 and PLAIN over TLS and plaintext,
/// re-authentication every 2 s (KIP-368), bad credentials, a client certificate as a super
/// user managing SCRAM users (KIP-554), unauthenticated requests cut off, and a certificate
/// replaced on disk served without a restart.
#[test]
fn python_clients_over_tls_and_sasl() {
    require_python_modules(&["confluent_kafka", "kafka"]);
    let s = start();
    let certs = s.certs.path().display().to_string();
    let admin = s.broker.admin();
    let mut args = s.args(&certs);
    args.extend(["--admin", &admin]);
    run_ok(&s.broker, "python3", "security.py", &args, LIMIT);
}

/// kcat (librdkafka 2.0): SCRAM-SHA-512 over SASL_SSL, PLAIN over SASL_PLAINTEXT, a client
/// certificate over SSL, and a wrong password refused.
#[test]
fn kcat_over_tls_and_sasl() {
    require_kcat();
    let s = start();
    let certs = s.certs.path().display().to_string();
    run_ok(
        &s.broker,
        "bash",
        "security_kcat.sh",
        &s.args(&certs),
        LIMIT,
    );
}

/// kafkajs: SCRAM-SHA-256 and PLAIN over SASL_SSL, with the test CA.
#[test]
fn kafkajs_over_sasl_ssl() {
    require_kafkajs();
    let s = start();
    let certs = s.certs.path().display().to_string();
    run_ok(
        &s.broker,
        "node",
        "node/kafkajs_security.js",
        &s.args(&certs),
        LIMIT,
    );
}

/// The Java client (kafka-clients 4.x) with `security.protocol=SASL_SSL`, SCRAM-SHA-512 and a
/// PEM trust store; and over SSL with a client certificate.
#[test]
fn java_client_over_sasl_ssl() {
    require_java_clients();
    let s = start();
    let certs = s.certs.path().display().to_string();
    let done = Script::spawn_java(
        &s.broker,
        "sluice.Security",
        &[&s.sasl_ssl, &s.mtls, &certs],
    )
    .finish(LIMIT);
    assert!(
        done.success(),
        "Java scenario failed\n{}\n{}",
        done.report(),
        s.broker.log_tail()
    );
    print!("{}", done.stdout);
}

/// `sluice user` and the CLI's own client over SASL_SSL: a super user creates, lists and
/// deletes a user, who can log in between; a non-super user may not; a wrong password is an
/// authentication error.
#[test]
fn the_cli_manages_users_over_sasl_ssl() {
    let s = start();
    let ca = s.certs.path().join("ca.pem").display().to_string();
    let conn = |user: &'static str, pw: &'static str, mech: &'static str| {
        vec![
            "--bootstrap".to_string(),
            s.sasl_ssl.clone(),
            "--security-protocol".into(),
            "SASL_SSL".into(),
            "--ca-file".into(),
            ca.clone(),
            "--sasl-mechanism".into(),
            mech.into(),
            "--sasl-username".into(),
            user.into(),
            "--sasl-password".into(),
            pw.into(),
        ]
    };
    let run = |cmd: &[&str], c: &[String]| {
        let mut a: Vec<&str> = cmd.to_vec();
        a.extend(c.iter().map(String::as_str));
        sluice(&a)
    };
    let admin = conn("admin", "adminpw", "SCRAM-SHA-256");
    let out = run(&["user", "create", "dave", "--password", "davepw"], &admin);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&run(&["user", "list"], &admin).stdout).into_owned();
    assert!(list.contains("dave") && list.contains("alice"), "{list}");
    let json = run(&["user", "list", "--format", "json"], &admin);
    let json: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("user list --format json");
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|u| u["user"] == "dave" && u["credentials"][0]["mechanism"] == "SCRAM-SHA-256"),
        "{json}"
    );
    // dave logs in (PLAIN checks against his SCRAM credential) and lists topics.
    let out = run(&["topic", "list"], &conn("dave", "davepw", "PLAIN"));
    assert!(out.status.success(), "{out:?}");
    // alice is not a super user.
    let out = run(
        &["user", "create", "eve", "--password", "x"],
        &conn("alice", "alicepw", "SCRAM-SHA-512"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ClusterAuthorizationFailed"),
        "{out:?}"
    );
    let out = run(&["topic", "list"], &conn("dave", "wrong", "SCRAM-SHA-256"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed"),
        "{out:?}"
    );
    let out = run(&["user", "delete", "dave"], &admin);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["topic", "list"], &conn("dave", "davepw", "PLAIN"));
    assert!(!out.status.success(), "a deleted user still logs in");
    // The plaintext listener is still there for everything else.
    let list = sluice_ok(&["topic", "list", "--bootstrap", &s.broker.bootstrap()]);
    assert!(list.contains("NAME"), "{list}");
}

/// The client CA is reloaded like the certificate: a client whose certificate comes from a new
/// CA is refused until the CA file on disk also holds that CA, then served, without a restart;
/// clients of the old CA keep working.
#[test]
fn a_rotated_client_ca_is_taken_without_a_restart() {
    let s = start();
    let dir = s.certs.path();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca2.key -out ca2.pem -subj /CN=sluice-test-ca-2",
        "req -newkey rsa:2048 -nodes -keyout client2.key -out client2.csr -subj /O=acme/CN=client2",
        "x509 -req -in client2.csr -CA ca2.pem -CAkey ca2.key -CAcreateserial -days 2 -out client2.pem -extfile client.ext",
    ] {
        openssl(dir, &args.split(' ').collect::<Vec<_>>());
    }
    let p = |f: &str| dir.join(f).display().to_string();
    let list = |client: &str| {
        sluice(&[
            "topic",
            "list",
            "--bootstrap",
            &s.mtls,
            "--security-protocol",
            "SSL",
            "--ca-file",
            &p("ca.pem"),
            "--cert-file",
            &p(&format!("{client}.pem")),
            "--key-file",
            &p(&format!("{client}.key")),
        ])
    };
    assert!(list("client").status.success(), "the first CA's client");
    let out = list("client2");
    assert!(
        !out.status.success(),
        "a certificate from an unknown CA: {out:?}"
    );
    // The rotation's first step: the CA file holds both CAs.
    let both = std::fs::read_to_string(p("ca.pem")).unwrap()
        + &std::fs::read_to_string(p("ca2.pem")).unwrap();
    std::fs::write(p("ca.pem.new"), both).unwrap();
    std::fs::rename(p("ca.pem.new"), p("ca.pem")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = list("client2");
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CA was never taken: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        list("client").status.success(),
        "the first CA's clients still served"
    );
}

/// Client quotas set with Kafka's own kafka-configs (AlterClientQuotas) and read back
/// (DescribeClientQuotas), then enforced on confluent-kafka's producer and consumer by
/// throttling (throttle_time_ms and a muted connection, KIP-219).
#[test]
fn client_quotas_set_with_kafka_configs_throttle_clients() {
    require_java_clients();
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    let configs = |args: &[&str]| {
        let mut a = vec!["--bootstrap-server", "127.0.0.1:0"];
        let bootstrap = broker.bootstrap();
        a[1] = &bootstrap;
        a.extend_from_slice(args);
        let done =
            Script::spawn_java(&broker, "org.apache.kafka.tools.ConfigCommand", &a).finish(LIMIT);
        assert!(
            done.success(),
            "kafka-configs {}\n{}",
            args.join(" "),
            done.report()
        );
        done.stdout
    };
    configs(&[
        "--alter",
        "--entity-type",
        "clients",
        "--entity-name",
        "slow",
        "--add-config",
        "producer_byte_rate=200000,consumer_byte_rate=300000",
    ]);
    let described = configs(&[
        "--describe",
        "--entity-type",
        "clients",
        "--entity-name",
        "slow",
    ]);
    assert!(
        described.contains("producer_byte_rate=200000"),
        "{described}"
    );
    // request_percentage: 0.01% of a handler thread's time per second (100 µs).
    configs(&[
        "--alter",
        "--entity-type",
        "clients",
        "--entity-name",
        "busy",
        "--add-config",
        "request_percentage=0.01",
    ]);
    let admin = broker.admin();
    run_ok(&broker, "python3", "quotas.py", &["--admin", &admin], LIMIT);
    // Removed, the quota no longer applies.
    configs(&[
        "--alter",
        "--entity-type",
        "clients",
        "--entity-name",
        "slow",
        "--delete-config",
        "producer_byte_rate,consumer_byte_rate",
    ]);
    let described = configs(&["--describe", "--entity-type", "clients"]);
    assert!(!described.contains("producer_byte_rate"), "{described}");
}

/// An HS256 JWT for `sub`, valid for an hour, signed with `secret` under key id k1.
fn hs256_token(secret: &str, sub: &str) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"k1"}"#),
        b64(format!(r#"{{"sub":"{sub}","iat":{now},"exp":{}}}"#, now + 3600).as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "{input}.{}",
        b64(ring::hmac::sign(&key, input.as_bytes()).as_ref())
    )
}

/// SASL/OAUTHBEARER against keys from a JWKS file: confluent-kafka signing its own tokens
/// (refreshed every 3 s, so sessions re-authenticate), bad tokens refused, kcat with
/// librdkafka's unsecured token (tests/clients/oauth.py); and the CLI, whose token's subject
/// is the principal: a super user's token may manage users, another's may not.
#[test]
fn oauthbearer_tokens_from_real_clients_and_the_cli() {
    require_python_modules(&["confluent_kafka"]);
    require_kcat();
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let secret = "an-hs256-secret-for-the-oauthbearer-test";
    let jwks = dir.path().join("jwks.json");
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    std::fs::write(
        &jwks,
        format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","k":"{k}"}}]}}"#),
    )
    .unwrap();
    let port = free_port();
    let broker = Broker::start_with_config(&format!(
        r#"
super_users = ["User:alice"]

[[listeners]]
name = "SASL"
address = "127.0.0.1:{port}"
security = "SASL_PLAINTEXT"

[oauthbearer]
jwks_file = "{}"
unsecured = true
"#,
        jwks.display()
    ));
    let sasl = format!("127.0.0.1:{port}");
    let admin = broker.admin();
    run_ok(
        &broker,
        "python3",
        "oauth.py",
        &["--sasl-plain", &sasl, "--secret", secret, "--admin", &admin],
        LIMIT,
    );
    let with_token = |cmd: &[&str], token: &str| {
        let mut a = cmd.to_vec();
        a.extend([
            "--bootstrap",
            &sasl,
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "OAUTHBEARER",
            "--sasl-password",
            token,
        ]);
        sluice(&a)
    };
    let out = with_token(
        &["user", "create", "frank", "--password", "x"],
        &hs256_token(secret, "alice"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = with_token(
        &["user", "create", "grace", "--password", "x"],
        &hs256_token(secret, "bob"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ClusterAuthorizationFailed"),
        "bob is not a super user: {out:?}"
    );
    let out = with_token(&["topic", "list"], &hs256_token("another secret", "alice"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature does not verify"),
        "{out:?}"
    );
}

/// `sluice quota`: set a user's, a client id's and the users' default quotas, list them (all,
/// filtered, as JSON), remove one, and refuse an unknown quota name.
#[test]
fn the_cli_sets_lists_and_deletes_client_quotas() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let quota = |args: &[&str]| {
        let mut a = vec!["quota"];
        a.extend_from_slice(args);
        a.extend(["--bootstrap", &b]);
        sluice(&a)
    };
    let ok = |args: &[&str]| {
        let out = quota(args);
        assert!(out.status.success(), "sluice quota {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "set",
        "--user",
        "alice",
        "producer_byte_rate=1048576",
        "request_percentage=50",
    ]);
    ok(&["set", "--user-default", "consumer_byte_rate=2097152"]);
    ok(&[
        "set",
        "--user",
        "alice",
        "--client-id",
        "app",
        "producer_byte_rate=4096",
        "producer_ids_rate=5",
    ]);
    let all = ok(&["list"]);
    assert!(all.contains("producer_ids_rate=5"), "{all}");
    assert!(
        all.contains("user=alice ") && all.contains("producer_byte_rate=1048576"),
        "{all}"
    );
    assert!(
        all.contains("user=<default>") && all.contains("consumer_byte_rate=2097152"),
        "{all}"
    );
    assert!(
        all.contains("user=alice, client-id=app") && all.contains("producer_byte_rate=4096"),
        "{all}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["list", "--user", "alice", "--format", "json"])).unwrap();
    let rows = json.as_array().unwrap();
    // Not strict: alice's own quotas and those of alice with a client id.
    assert_eq!(rows.len(), 2, "{json}");
    let own = rows
        .iter()
        .find(|r| r["entity"].as_object().unwrap().len() == 1)
        .unwrap();
    assert_eq!(own["entity"]["user"], "alice", "{json}");
    assert_eq!(own["quotas"]["request_percentage"], 50.0, "{json}");
    ok(&["delete", "--user", "alice", "request_percentage"]);
    let after = ok(&["list", "--user", "alice", "--format", "json"]);
    assert!(
        !after.contains("request_percentage") && after.contains("1048576"),
        "{after}"
    );
    let bad = quota(&["set", "--user", "alice", "bytes_per_fortnight=1"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown quota"),
        "{bad:?}"
    );
    let nobody = quota(&["set", "producer_byte_rate=1"]);
    assert!(
        !nobody.status.success(),
        "a quota without an entity was accepted"
    );
}
