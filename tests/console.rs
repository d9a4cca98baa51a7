//! The web console (issue 17) in a real browser: a broker with an admin token runs a
//! dead-letter routing pipeline built from source while clicks flow in; Debian's Chromium,
//! driven by Playwright (tests/console/console.mjs), clicks through the overview, a topic and
//! its messages, a group's lag and the pipeline's dead letters, on a desktop and a phone-sized
//! screen. Screenshots are kept in target/console-screenshots.
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "console"`.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{repo, require, require_python_modules, sluice, Broker, Script};

const TOKEN: &str = "console-test-token";

/// `GET path` on the admin API, with or without the token: (status code, body).
fn get(b: &Broker, path: &str, token: Option<&str>) -> (u16, String) {
    support::http(&b.admin(), "GET", path, token)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn web_console_in_a_real_browser() {
    require(
        "chromium",
        &["--version"],
        "Debian's Chromium",
        "apt-get install chromium",
    );
    let console_dir = repo().join("tests/console");
    assert!(
        console_dir
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is required for this test. Install it with: npm ci --prefix tests/console"
    );
    require_python_modules(&["confluent_kafka"]);

    let mut b = Broker::start_with_config(&format!("admin_token = \"{TOKEN}\"\n"));
    // The page is served to anyone; the data only with the token.
    let (status, html) = get(&b, "/", None);
    assert_eq!(status, 200);
    assert!(html.contains("/console/console.js"));
    let (status, _) = get(&b, "/v1/topics", None);
    assert_eq!(status, 401);
    let (status, body) = get(&b, "/v1/topics", Some(TOKEN));
    assert_eq!(status, 200, "{body}");

    // The pipeline: the standard dead-letter router, built from source, routing clicks on
    // and everything else to dead letters.
    let plugins = b.plugins_dir();
    fs::create_dir_all(&plugins).unwrap();
    let wasm = b.scratch().join("validate.wasm");
    let o = sluice()
        .args(["plugin", "build"])
        .arg(repo().join("plugins/dead-letter-router"))
        .arg("--out")
        .arg(&wasm)
        .output()
        .expect("run sluice plugin build");
    assert!(
        o.status.success(),
        "sluice plugin build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::copy(&wasm, plugins.join("validate.wasm")).unwrap();
    fs::write(
        plugins.join("validate.toml"),
        "inputs = [\"clicks\"]\noutput = \"clicks-valid\"\ndead_letter = \"clicks-invalid\"\n\
         wasm = \"validate.wasm\"\n[config]\nroute_field = \"event\"\ndefault_route = \"dead_letter\"\n\
         [config.routes]\nclick = \"output\"\n",
    )
    .unwrap();
    for t in ["clicks", "clicks-valid"] {
        let o = sluice()
            .args(["topic", "create", t, "--partitions", "3", "--bootstrap"])
            .arg(b.bootstrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    wait_for("the pipeline to run", Duration::from_secs(60), || {
        get(&b, "/v1/pipelines", Some(TOKEN))
            .1
            .contains("\"status\":\"running\"")
    });

    let mut traffic = Script::spawn(
        &b,
        "python3",
        "console_traffic.py",
        &[
            "--input",
            "clicks",
            "--output",
            "clicks-valid",
            "--group",
            "console-readers",
            "--seconds",
            "300",
        ],
    );
    wait_for(
        "the traffic's group to commit",
        Duration::from_secs(90),
        || {
            assert!(traffic.running(), "console_traffic.py ended early");
            fs::read_dir(b.scratch())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("console_traffic.py")
                })
                .any(|e| fs::read_to_string(e.path()).is_ok_and(|s| s.contains("READY")))
        },
    );

    let shots = repo().join("target/console-screenshots");
    let _ = fs::remove_dir_all(&shots);
    let out = support::command("node")
        .current_dir(&console_dir)
        .arg("console.mjs")
        .args(["--admin", &b.admin(), "--token", TOKEN])
        .args(["--topic", "clicks", "--group", "console-readers"])
        .args(["--pipeline", "validate", "--reason", "no route"])
        .arg("--shots")
        .arg(&shots)
        .output()
        .expect("run node");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "console checks failed:\n{report}");
    for name in [
        "00-token-needed",
        "01-overview",
        "02-topic-messages",
        "03-group-lag",
        "04-pipeline-dead-letters",
        "07-phone-pipeline",
    ] {
        let png = shots.join(format!("{name}.png"));
        assert!(
            fs::metadata(&png).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            png.display()
        );
    }
    assert!(traffic.running(), "the traffic stopped before the end");
    b.assert_alive();
}
