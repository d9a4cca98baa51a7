//! Cluster-wide deployment. `sluice plugin deploy NAME.toml [--workers GROUP]` writes the
//! manifest and its component as one record (key: the pipeline's name) to the compacted topic
//! `GROUP.deployments`. Whoever runs pipelines for that group follows the topic and keeps its
//! records as files in a directory of its own, reconciled like the plugins directory (same
//! checks, same hot reload): the `sluice worker`s of the group (over a Kafka client, in
//! `worker::deploy`) and a broker's own plugin host, which follows `sluice.deployments` (its
//! `deployments_group`) straight from its log ([`follow_local`]). A tombstone undeploys.
//! Compaction keeps each pipeline's latest version, so a follower that starts later finds every
//! deployment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checkpoint::Bin;
use super::io::{Item, LocalIo, Moved, TaskIo};
use crate::broker::Broker;

/// Largest deployment record (manifest and component).
pub const MAX_DEPLOYMENT: usize = 64 << 20;

/// The group a broker's own plugin host follows unless configured otherwise.
pub const BROKER_GROUP: &str = "sluice";

pub fn topic(group: &str) -> String {
    format!("{group}.deployments")
}

#[derive(Serialize, Deserialize)]
struct Deployment {
    manifest: String,
    component: Bin,
}

/// A pipeline name that is safe as a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The record that deploys the pipeline of manifest `path` (with the component it names), or
/// `None` to undeploy it; with the pipeline's name, the record's key.
pub fn record(path: &Path, undeploy: bool) -> Result<(String, Option<Vec<u8>>), String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a NAME.toml path", path.display()))?
        .to_string();
    if !valid_name(&name) {
        return Err(format!("'{name}' is not a valid pipeline name"));
    }
    if undeploy {
        return Ok((name, None));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let m = super::manifest::Manifest::parse(path, &text).map_err(|e| e.to_string())?;
    let component =
        std::fs::read(&m.wasm).map_err(|e| format!("cannot read {}: {e}", m.wasm.display()))?;
    let v = rmp_serde::to_vec_named(&Deployment {
        manifest: text,
        component: Bin(component),
    })
    .map_err(|e| e.to_string())?;
    if v.len() > MAX_DEPLOYMENT {
        return Err(format!(
            "{name}: {} bytes with its component, at most {MAX_DEPLOYMENT}",
            v.len()
        ));
    }
    Ok((name, Some(v)))
}

/// Writes `bytes` to `path` by way of a temporary file, so a reader never sees half of it.
/// A file that already holds `bytes` is left alone: rewriting it would change its time, and
/// the host would hot-reload an unchanged pipeline (a follower replays the whole topic at
/// each start).
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Applies one record of a deployments topic to `dir`: NAME.wasm, then NAME.toml (its `wasm`
/// key dropped, so it names NAME.wasm); a tombstone removes both.
pub fn apply(dir: &Path, key: Option<&[u8]>, value: Option<&[u8]>, offset: i64) {
    let Some(name) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    if !valid_name(name) {
        tracing::warn!(%name, offset, "deployment with an unusable name ignored");
        return;
    }
    let (toml, wasm) = (
        dir.join(format!("{name}.toml")),
        dir.join(format!("{name}.wasm")),
    );
    let Some(v) = value else {
        let _ = std::fs::remove_file(&toml);
        let _ = std::fs::remove_file(&wasm);
        tracing::info!(pipeline = %name, offset, "undeployed through the deployments topic");
        return;
    };
    let d: Deployment = match rmp_serde::from_slice(v) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(pipeline = %name, offset, error = %e, "unreadable deployment ignored");
            return;
        }
    };
    let manifest = match d.manifest.parse::<toml::Table>() {
        Ok(mut t) => {
            t.remove("wasm");
            toml::to_string(&t).unwrap_or(d.manifest)
        }
        Err(_) => d.manifest,
    };
    match replace(&wasm, &d.component.0).and_then(|()| replace(&toml, manifest.as_bytes())) {
        Ok(()) => tracing::info!(pipeline = %name, offset, "deployment received"),
        Err(e) => tracing::error!(pipeline = %name, error = %e, "cannot keep a deployment"),
    }
}

/// Removes from `dir` the pipelines not in `seen`: once a follower has applied everything
/// the topic held when it started, what `dir` holds beyond that was undeployed meanwhile.
pub fn prune(dir: &Path, seen: &std::collections::BTreeSet<String>) {
    for (name, path) in super::host::manifests_in(dir) {
        if !seen.contains(&name) {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("wasm"));
            tracing::info!(pipeline = %name, "undeployed while this process was down");
        }
    }
}

/// The broker's side: keeps `dir` equal to `GROUP.deployments` of this broker until `stop`,
/// reading the log directly (committed records only, as a read_committed consumer would).
/// Starts over from the log's start at each start-up, so `dir` also loses what was undeployed
/// while the broker was down.
pub fn follow_local(
    broker: Arc<Broker>,
    group: &str,
    dir: PathBuf,
    rt: tokio::runtime::Handle,
    stop: &AtomicBool,
) {
    let t = topic(group);
    let mut io = LocalIo::new(broker.clone(), t.clone(), 0, PathBuf::new(), rt);
    let mut next = 0i64;
    let mut seen = std::collections::BTreeSet::new();
    let mut caught_up = false;
    while !stop.load(Ordering::Acquire) {
        // A deployment is rare: a look every half second costs nothing and keeps this apart
        // from the log's wake-ups.
        if broker.topic(&t).is_none() {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let read = match io.read(next) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, topic = %t, "deployments topic");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        match read.moved {
            Moved::OutOfRange => next = read.log_start,
            Moved::StepTo(o) => next = next.max(o),
            Moved::No => {}
        }
        if !caught_up && read.items.is_empty() && next >= read.high {
            // Everything in the topic is applied: what the directory still holds beyond it was
            // undeployed while this broker was down.
            prune(&dir, &seen);
            caught_up = true;
        }
        let empty = read.items.is_empty();
        for item in read.items {
            match item {
                Item::Data(r) => {
                    if let Some(k) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
                        seen.insert(k.to_string());
                    }
                    apply(&dir, r.key.as_deref(), r.value.as_deref(), r.offset);
                    next = r.offset + 1;
                }
                Item::Control { offset, .. } => next = offset + 1,
                Item::Bad { last, why, .. } => {
                    tracing::warn!(topic = %t, offset = last, %why, "unreadable deployments ignored");
                    next = last + 1;
                }
            }
        }
        if empty {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["clicks", "click-validate", "v1.2_x"] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    #[test]
    fn a_record_applies_and_a_tombstone_removes() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("p.wasm"), b"\0asm component").unwrap();
        let manifest = src.path().join("p.toml");
        std::fs::write(
            &manifest,
            "wasm = \"p.wasm\"\ninputs = [\"a\"]\noutput = \"b\"\n",
        )
        .unwrap();
        let (name, value) = record(&manifest, false).unwrap();
        assert_eq!(name, "p");
        let dir = tempfile::tempdir().unwrap();
        apply(dir.path(), Some(b"p"), value.as_deref(), 7);
        let kept = std::fs::read_to_string(dir.path().join("p.toml")).unwrap();
        assert!(!kept.contains("wasm"), "{kept}");
        assert!(kept.contains("inputs"), "{kept}");
        assert_eq!(
            std::fs::read(dir.path().join("p.wasm")).unwrap(),
            b"\0asm component"
        );
        apply(dir.path(), Some(b"p"), None, 8);
        assert!(!dir.path().join("p.toml").exists());
        assert!(!dir.path().join("p.wasm").exists());
    }
}
