use super::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

fn enc(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

const NOW_S: i64 = 1_800_000_000;
const NOW_MS: i64 = NOW_S * 1000;

type Signer<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// A token over `claims`, signed by `sign` (None: unsecured).
fn token(header: &str, claims: &str, sign: Option<Signer>) -> String {
    let input = format!("{}.{}", enc(header.as_bytes()), enc(claims.as_bytes()));
    let sig = sign.map(|s| enc(&s(input.as_bytes()))).unwrap_or_default();
    format!("{input}.{sig}")
}

fn claims(sub: &str, exp: i64) -> String {
    format!(
        r#"{{"sub":"{sub}","exp":{exp},"iat":{NOW_S},"iss":"https://idp","aud":["kafka","other"]}}"#
    )
}

fn oauth(jwks: &str, tweak: impl FnOnce(&mut OAuthSettings)) -> (tempfile::TempDir, OAuth) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks).unwrap();
    let mut s = OAuthSettings {
        jwks_file: Some(path),
        ..Default::default()
    };
    tweak(&mut s);
    (dir, OAuth::new(s).unwrap())
}

fn message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

#[test]
fn hs256_tokens_verify_and_their_claims_are_checked() {
    let secret = b"a shared secret of thirty-two bytes!";
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","kid":"h1","k":"{}"}}]}}"#,
        enc(secret)
    );
    let (_d, o) = oauth(&jwks, |s| {
        s.expected_issuer = Some("https://idp".into());
        s.expected_audience = vec!["kafka".into()];
    });
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sign = |m: &[u8]| ring::hmac::sign(&key, m).as_ref().to_vec();
    let h = r#"{"alg":"HS256","kid":"h1","typ":"JWT"}"#;
    let good = token(h, &claims("alice", NOW_S + 60), Some(&sign));
    assert_eq!(
        o.authenticate(&message(&good), NOW_MS),
        Ok(Validated {
            user: "alice".into(),
            expires_ms: (NOW_S + 60) * 1000
        })
    );
    // The authorization id, when given, must be the principal.
    let with_authz = format!("n,a=alice,\x01auth=Bearer {good}\x01\x01");
    assert!(o.authenticate(with_authz.as_bytes(), NOW_MS).is_ok());
    let other_authz = format!("n,a=bob,\x01auth=Bearer {good}\x01\x01");
    assert_eq!(
        o.authenticate(other_authz.as_bytes(), NOW_MS),
        Err(OAuthError::AuthzId)
    );
    // One changed byte of the claims breaks the signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = enc(claims("mallory", NOW_S + 60).as_bytes());
    assert_eq!(
        o.validate(&parts.join("."), NOW_MS),
        Err(OAuthError::Signature)
    );
    // Expired (past the 30 s of skew), not yet valid, wrong issuer or audience, no subject.
    let expired = token(h, &claims("alice", NOW_S - 31), Some(&sign));
    assert_eq!(o.validate(&expired, NOW_MS), Err(OAuthError::Expired));
    let skewed = token(h, &claims("alice", NOW_S - 29), Some(&sign));
    assert!(o.validate(&skewed, NOW_MS).is_ok());
    let future = format!(
        r#"{{"sub":"a","exp":{},"nbf":{},"iss":"https://idp","aud":"kafka"}}"#,
        NOW_S + 600,
        NOW_S + 300
    );
    assert_eq!(
        o.validate(&token(h, &future, Some(&sign)), NOW_MS),
        Err(OAuthError::NotYetValid)
    );
    let iss = format!(
        r#"{{"sub":"a","exp":{},"iss":"https://evil","aud":"kafka"}}"#,
        NOW_S + 60
    );
    assert_eq!(
        o.validate(&token(h, &iss, Some(&sign)), NOW_MS),
        Err(OAuthError::Issuer)
    );
    let aud = format!(
        r#"{{"sub":"a","exp":{},"iss":"https://idp","aud":"elsewhere"}}"#,
        NOW_S + 60
    );
    assert_eq!(
        o.validate(&token(h, &aud, Some(&sign)), NOW_MS),
        Err(OAuthError::Audience)
    );
    let nosub = format!(
        r#"{{"exp":{},"iss":"https://idp","aud":"kafka"}}"#,
        NOW_S + 60
    );
    assert_eq!(
        o.validate(&token(h, &nosub, Some(&sign)), NOW_MS),
        Err(OAuthError::NoPrincipal("sub".into()))
    );
    let noexp = r#"{"sub":"a","iss":"https://idp","aud":"kafka"}"#;
    assert!(matches!(
        o.validate(&token(h, noexp, Some(&sign)), NOW_MS),
        Err(OAuthError::Token(_))
    ));
    // An unknown key id, and an unsecured token where none is allowed.
    let unknown = token(
        r#"{"alg":"HS256","kid":"h2"}"#,
        &claims("alice", NOW_S + 60),
        Some(&sign),
    );
    assert!(matches!(
        o.validate(&unknown, NOW_MS),
        Err(OAuthError::NoKey { .. })
    ));
    let none = token(r#"{"alg":"none"}"#, &claims("alice", NOW_S + 60), None);
    assert_eq!(o.validate(&none, NOW_MS), Err(OAuthError::Unsecured));
    // The algorithm is the key's: an HMAC key does not verify an RS256 claim.
    let confused = token(
        r#"{"alg":"RS256","kid":"h1"}"#,
        &claims("alice", NOW_S + 60),
        Some(&sign),
    );
    assert!(matches!(
        o.validate(&confused, NOW_MS),
        Err(OAuthError::NoKey { .. })
    ));
}

#[test]
fn ecdsa_ed25519_and_rsa_keys_verify() {
    let rng = SystemRandom::new();
    let ec_doc =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_doc.as_ref(),
        &rng,
    )
    .unwrap();
    let p = ec.public_key().as_ref();
    let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
    // RSA: ring cannot make keys, openssl can (the TLS tests need it too).
    let dir = tempfile::tempdir().unwrap();
    let (pem, der) = (dir.path().join("rsa.pem"), dir.path().join("rsa.der"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        vec![
            "rsa",
            "-traditional",
            "-outform",
            "DER",
            "-in",
            pem.to_str().unwrap(),
            "-out",
        ],
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .arg(if args[0] == "rsa" { &der } else { &pem })
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // PKCS#1 DER: ring reads it as is.
    let rsa = RsaKeyPair::from_der(&std::fs::read(&der).unwrap()).unwrap();
    let comps: RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
    let (n, e) = (comps.n, comps.e);
    let jwks = format!(
        r#"{{"keys":[
            {{"kty":"EC","crv":"P-256","kid":"ec","x":"{}","y":"{}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"{}"}},
            {{"kty":"RSA","kid":"rsa","alg":"RS256","n":"{}","e":"{}"}},
            {{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}}
        ]}}"#,
        enc(&p[1..33]),
        enc(&p[33..65]),
        enc(ed.public_key().as_ref()),
        enc(&n),
        enc(&e)
    );
    let (_d, o) = oauth(&jwks, |_| {});
    let c = claims("svc", NOW_S + 60);
    let es = |m: &[u8]| ec.sign(&rng, m).unwrap().as_ref().to_vec();
    assert_eq!(
        o.validate(
            &token(r#"{"alg":"ES256","kid":"ec"}"#, &c, Some(&es)),
            NOW_MS
        )
        .unwrap()
        .user,
        "svc"
    );
    // Without a kid, every key that fits the algorithm is tried.
    assert!(o
        .validate(&token(r#"{"alg":"ES256"}"#, &c, Some(&es)), NOW_MS)
        .is_ok());
    let eds = |m: &[u8]| ed.sign(m).as_ref().to_vec();
    assert!(o
        .validate(
            &token(r#"{"alg":"EdDSA","kid":"ed"}"#, &c, Some(&eds)),
            NOW_MS
        )
        .is_ok());
    let rs = |m: &[u8]| {
        let mut sig = vec![0; rsa.public().modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
            .unwrap();
        sig
    };
    assert!(o
        .validate(
            &token(r#"{"alg":"RS256","kid":"rsa"}"#, &c, Some(&rs)),
            NOW_MS
        )
        .is_ok());
    // The RSA key pins RS256; an ES256 signature over the same input is not its.
    assert_eq!(
        o.validate(
            &token(r#"{"alg":"ES256","kid":"ec"}"#, &c, Some(&eds)),
            NOW_MS
        ),
        Err(OAuthError::Signature)
    );
}

#[test]
fn unsecured_tokens_when_allowed_and_keys_reload_when_the_file_changes() {
    let (d, o) = oauth(
        r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0LWE"}]}"#,
        |s| s.unsecured = true,
    );
    let none = token(r#"{"alg":"none"}"#, &claims("dev", NOW_S + 60), None);
    assert_eq!(o.authenticate(&message(&none), NOW_MS).unwrap().user, "dev");
    // Rotation: a token by a key added to the file verifies once the file is replaced.
    let key_b = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret-b");
    let sign = |m: &[u8]| ring::hmac::sign(&key_b, m).as_ref().to_vec();
    let t = token(
        r#"{"alg":"HS256","kid":"b"}"#,
        &claims("dev", NOW_S + 60),
        Some(&sign),
    );
    assert!(matches!(
        o.validate(&t, NOW_MS),
        Err(OAuthError::NoKey { .. })
    ));
    let path = d.path().join("jwks.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"keys":[{{"kty":"oct","kid":"b","k":"{}"}}]}}"#,
            enc(b"secret-b")
        ),
    )
    .unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(o.validate(&t, NOW_MS).is_ok());
    // A broken file keeps the keys in use.
    std::fs::write(&path, "{").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later + std::time::Duration::from_secs(5))
        .unwrap();
    assert!(o.validate(&t, NOW_MS).is_ok());
}

#[test]
fn client_messages_are_parsed_per_rfc_7628() {
    assert_eq!(
        client_first(b"n,,\x01auth=Bearer abc\x01\x01"),
        Ok((None, "abc"))
    );
    assert_eq!(
        client_first(b"n,a=u,\x01host=h\x01auth=bearer abc\x01ext=1\x01\x01"),
        Ok((Some("u"), "abc"))
    );
    for bad in [
        &b""[..],
        b"\x01",
        b"n,,\x01auth=Bearer abc\x01",
        b"p=x,,\x01auth=Bearer abc\x01\x01",
        b"n,,\x01auth=Basic abc\x01\x01",
        b"n,,\x01auth=Bearer \x01\x01",
        b"n,,\x01noequals\x01\x01",
        b"n,,\xff\x01\x01",
    ] {
        assert!(client_first(bad).is_err(), "{bad:?}");
    }
    // Garbage tokens are errors, never panics.
    let (_d, o) = oauth(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, |s| {
        s.unsecured = true
    });
    for t in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        "e30.e30.",
        "eyJhbGciOjF9.e30.x",
    ] {
        assert!(o.validate(t, NOW_MS).is_err(), "{t}");
    }
}

#[test]
fn a_jwks_without_a_usable_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    for bad in [
        "{}",
        r#"{"keys":[]}"#,
        r#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#,
        "nope",
    ] {
        std::fs::write(&path, bad).unwrap();
        let s = OAuthSettings {
            jwks_file: Some(path.clone()),
            ..Default::default()
        };
        assert!(
            matches!(OAuth::new(s), Err(OAuthError::Jwks { .. })),
            "{bad}"
        );
    }
}
