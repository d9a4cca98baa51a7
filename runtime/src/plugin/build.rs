//! `sluice plugin new` and `sluice plugin build`: from a Rust crate to a component the broker
//! loads.
//!
//! A plugin crate is a `cdylib` built for `wasm32-unknown-unknown` (no WASI: the host grants
//! only what `wit/processor.wit` declares), then wrapped into a component with
//! `wit-component`; the WIT it was built against travels inside the module, put there by
//! wit-bindgen.
//!
//! Two toolchains work: one whose sysroot has the wasm32 standard library (`rustup target add
//! wasm32-unknown-unknown`), or Debian's `rustc-web` with `rust-web-src`, which has no wasm32
//! std but can build it from source (`-Zbuild-std`, allowed on a stable compiler by
//! `RUSTC_BOOTSTRAP=1`). The recipe goes on the cargo command line, so a plugin crate needs no
//! `.cargo/config.toml` of its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use thiserror::Error;

const TARGET: &str = "wasm32-unknown-unknown";

/// Debian's rustc, which builds the wasm32 std from the sources in `rust-web-src`.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error(
        "no wasm32 toolchain: run `rustup target add {TARGET}`, or install Debian's rustc-web and rust-web-src"
    )]
    NoToolchain,
    #[error("{}: no Cargo.toml here (`sluice plugin new NAME` makes a plugin crate)", .0.display())]
    NotACrate(PathBuf),
    #[error("{}: a cargo workspace, not a plugin crate; build it as a workspace", .0.display())]
    IsWorkspace(PathBuf),
    #[error("{0}: not a plugin crate: its Cargo.toml needs `[lib] crate-type = [\"cdylib\"]`")]
    NotCdylib(String),
    #[error("{}: no plugin crates (cdylib members) in this workspace", .0.display())]
    NoPlugins(PathBuf),
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("cargo metadata failed: {0}")]
    Metadata(String),
    #[error("cargo build failed (its messages are above)")]
    Cargo,
    #[error("cargo built no wasm module for {0}")]
    NoModule(String),
    #[error("cannot make a component: {0}")]
    Componentize(String),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid plugin name '{0}': use letters, digits, '-' and '_', starting with a letter")]
    BadName(String),
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("{tool} is needed to build this plugin and was not found; install it with: {install}")]
    MissingTool {
        tool: &'static str,
        install: &'static str,
    },
    #[error("{0} failed (its messages are above)")]
    ToolFailed(&'static str),
    #[error("unknown plugin language '{0}': rust, python, js or c")]
    UnknownLang(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to get a wasm32 standard library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// The `rustc` cargo would use has a prebuilt wasm32 std (rustup's target, usually).
    Installed,
    /// Build std from source with this rustc (Debian's rustc-web and rust-web-src).
    BuildStd { rustc: PathBuf },
}

fn sysroot(rustc: &Path, dir: &Path) -> Option<PathBuf> {
    // Run inside the crate, so rustup honours its rust-toolchain file.
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(s.trim()))
}

/// Which toolchain builds the crate in `dir`: the installed target first, Debian's recipe
/// otherwise.
pub fn detect_toolchain(dir: &Path) -> Result<Toolchain, BuildError> {
    let rustc = std::env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from);
    detect_with(&rustc, Path::new(DEBIAN_RUSTC), dir)
}

fn detect_with(rustc: &Path, debian: &Path, dir: &Path) -> Result<Toolchain, BuildError> {
    if let Some(root) = sysroot(rustc, dir) {
        if root.join("lib/rustlib").join(TARGET).join("lib").is_dir() {
            return Ok(Toolchain::Installed);
        }
    }
    if let Some(root) = sysroot(debian, dir) {
        if root.join("lib/rustlib/src/rust/library/std").is_dir() {
            return Ok(Toolchain::BuildStd {
                rustc: debian.to_path_buf(),
            });
        }
    }
    Err(BuildError::NoToolchain)
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    id: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    crate_types: Vec<String>,
}

impl Package {
    fn is_plugin(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.crate_types.iter().any(|c| c == "cdylib"))
    }

    fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }
}

fn metadata(manifest: &Path) -> Result<Metadata, BuildError> {
    let out = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| BuildError::Spawn {
            command: "cargo metadata".into(),
            source,
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(BuildError::Metadata(
            msg.trim().trim_start_matches("error: ").to_string(),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| BuildError::Metadata(e.to_string()))
}

/// The crate (or workspace) at `dir`, and the plugin packages in it.
struct Project {
    manifest: PathBuf,
    meta: Metadata,
    /// `Some`: `dir` is this package; `None`: `dir` is a virtual workspace root.
    package: Option<usize>,
}

fn project(dir: &Path) -> Result<Project, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(dir.to_path_buf()));
    }
    let manifest = manifest.canonicalize().map_err(io_err(&manifest))?;
    let meta = metadata(&manifest)?;
    let package = meta
        .packages
        .iter()
        .position(|p| p.manifest_path == manifest);
    Ok(Project {
        manifest,
        meta,
        package,
    })
}

/// Runs `cargo build` for wasm32 (every workspace member if `workspace`) and returns the
/// core module of each cdylib built, with its package id. Cargo's own progress and errors go
/// to the terminal as usual.
fn cargo_build(
    manifest: &Path,
    toolchain: &Toolchain,
    workspace: bool,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(manifest)
        // Artifact paths on stdout; diagnostics still rendered for people on stderr.
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if workspace {
        cmd.arg("--workspace");
    }
    if let Toolchain::BuildStd { rustc } = toolchain {
        // Only for this child: the broker's own builds must keep their toolchain.
        cmd.env("RUSTC", rustc)
            .env("RUSTC_BOOTSTRAP", "1")
            .arg("-Zbuild-std=std,panic_abort")
            // wasm32 defaults to abort anyway; said explicitly because build-std builds only
            // the panic runtime named above, whatever the crate's profile says.
            .args(["--config", "profile.release.panic=\"abort\""]);
    }
    let spawn_err = |source: std::io::Error| BuildError::Spawn {
        command: "cargo build".into(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let mut modules = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(m) = wasm_artifact(&line) {
                modules.push(m);
            }
        }
    }
    if !child.wait().map_err(spawn_err)?.success() {
        return Err(BuildError::Cargo);
    }
    Ok(modules)
}

/// A `compiler-artifact` message's package id and `.wasm` file, for cdylib targets.
fn wasm_artifact(line: &str) -> Option<(String, PathBuf)> {
    #[derive(Deserialize)]
    struct Msg {
        reason: String,
        package_id: Option<String>,
        target: Option<MsgTarget>,
        #[serde(default)]
        filenames: Vec<PathBuf>,
    }
    #[derive(Deserialize)]
    struct MsgTarget {
        crate_types: Vec<String>,
    }
    let msg: Msg = serde_json::from_str(line).ok()?;
    if msg.reason != "compiler-artifact" || !msg.target?.crate_types.iter().any(|c| c == "cdylib") {
        return None;
    }
    let wasm = msg
        .filenames
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))?;
    Some((msg.package_id?, wasm))
}

/// Wraps a wasm32 core module into a component. Already a component: an error, so that a
/// wrong file is noticed.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, BuildError> {
    match core.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {}
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {
            return Err(BuildError::Componentize(
                "this file is already a component".into(),
            ))
        }
        _ => {
            return Err(BuildError::Componentize(
                "this file is not a WebAssembly module".into(),
            ))
        }
    }
    let encoded = wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| {
            let mut why = format!("{e:#}");
            if why.contains("wasi") {
                why.push_str(
                    " (the module imports WASI, which sluice does not provide: build for \
                 wasm32-unknown-unknown, or in C use no libc I/O)",
                );
            } else if why.contains("component-type") || why.contains("no world") {
                why.push_str(
                    " (was the module built with wit-bindgen bindings for wit/processor.wit?)",
                );
            }
            BuildError::Componentize(why)
        })?;
    let missing = missing_exports(&encoded);
    if !missing.is_empty() {
        return Err(BuildError::Componentize(format!(
            "it does not export {} of the processor world (wit/processor.wit): was it built \
             with bindings for it?",
            missing.join(", ")
        )));
    }
    Ok(encoded)
}

/// The processor world's exports a component lacks. Checked here so that a module built
/// without the bindings fails at build time, not at deploy time.
pub(crate) fn missing_exports(component: &[u8]) -> Vec<&'static str> {
    const EXPORTS: [&str; 5] = ["init", "process", "tick", "snapshot", "restore"];
    let names: Vec<String> = match wit_component::decode(component) {
        Ok(wit_component::DecodedWasm::Component(resolve, world)) => resolve.worlds[world]
            .exports
            .keys()
            .map(|k| resolve.name_world_key(k))
            .collect(),
        _ => Vec::new(),
    };
    EXPORTS
        .into_iter()
        .filter(|e| !names.iter().any(|n| n == e))
        .collect()
}

/// Writes through a temporary file and a rename: the broker watches the plugins directory
/// and must never load a half-written component.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin.wasm".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn componentize_file(core: &Path, out: &Path) -> Result<(), BuildError> {
    let bytes = std::fs::read(core).map_err(io_err(core))?;
    let component = componentize(&bytes)?;
    write_atomically(out, &component)
}

/// `sluice plugin componentize IN --out OUT`: for modules built by other toolchains (C).
pub fn componentize_path(core: &Path, out: &Path) -> Result<(), BuildError> {
    componentize_file(core, out)
}

/// `sluice plugin build DIR`: a plugin crate as [`build_plugin`], a virtual workspace as
/// [`build_workspace`] (with `out` as the directory). Returns the components' paths.
pub fn build(dir: &Path, out: Option<&Path>) -> Result<Vec<PathBuf>, BuildError> {
    match super::langs::Lang::of_dir(dir) {
        Some(super::langs::Lang::Python) => return Ok(vec![super::langs::build_python(dir, out)?]),
        Some(super::langs::Lang::Js) => return Ok(vec![super::langs::build_js(dir, out)?]),
        Some(super::langs::Lang::C) => return Ok(vec![super::langs::build_c(dir, out)?]),
        _ => {}
    }
    let p = project(dir)?;
    match p.package {
        Some(i) => Ok(vec![build_package(&p, i, dir, out)?]),
        None => build_members(&p, dir, out),
    }
}

/// Builds the plugin crate at `dir` into a component, written to `out`, by default
/// `DIR/<package name>.wasm`: next to the `NAME.toml` that `sluice plugin new` made, so the
/// two are copied into the plugins directory together. Returns the component's path.
pub fn build_plugin(dir: &Path, out: Option<&Path>) -> Result<PathBuf, BuildError> {
    let p = project(dir)?;
    match p.package {
        Some(i) => build_package(&p, i, dir, out),
        None => Err(BuildError::IsWorkspace(dir.to_path_buf())),
    }
}

/// Builds every plugin crate (cdylib member) of the cargo workspace at `dir` with one cargo
/// run. Each component is `<package name>.wasm`, in `out_dir` if given, else in its crate's
/// directory. Returns their paths.
pub fn build_workspace(dir: &Path, out_dir: Option<&Path>) -> Result<Vec<PathBuf>, BuildError> {
    build_members(&project(dir)?, dir, out_dir)
}

fn build_package(
    p: &Project,
    i: usize,
    dir: &Path,
    out: Option<&Path>,
) -> Result<PathBuf, BuildError> {
    let package = &p.meta.packages[i];
    if !package.is_plugin() {
        return Err(BuildError::NotCdylib(package.name.clone()));
    }
    let toolchain = detect_toolchain(dir)?;
    let modules = cargo_build(&p.manifest, &toolchain, false)?;
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => package.dir().join(format!("{}.wasm", package.name)),
    };
    write_component(package, &modules, &out)?;
    Ok(out)
}

fn build_members(
    p: &Project,
    dir: &Path,
    out_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, BuildError> {
    let plugins: Vec<&Package> = p
        .meta
        .packages
        .iter()
        .filter(|pkg| p.meta.workspace_members.contains(&pkg.id) && pkg.is_plugin())
        .collect();
    if plugins.is_empty() {
        return Err(BuildError::NoPlugins(p.meta.workspace_root.clone()));
    }
    let toolchain = detect_toolchain(dir)?;
    // Also right when `dir` is a root package with members: `--workspace` builds them all.
    let modules = cargo_build(&p.manifest, &toolchain, true)?;
    let mut written = Vec::new();
    for package in plugins {
        let name = format!("{}.wasm", package.name);
        let out = out_dir.unwrap_or(package.dir()).join(name);
        write_component(package, &modules, &out)?;
        written.push(out);
    }
    Ok(written)
}

fn write_component(
    package: &Package,
    modules: &[(String, PathBuf)],
    out: &Path,
) -> Result<(), BuildError> {
    let (_, core) = modules
        .iter()
        .find(|(id, _)| *id == package.id)
        .ok_or_else(|| BuildError::NoModule(package.name.clone()))?;
    componentize_file(core, out)
}

/// The SDK as this binary was built with it, for `sluice plugin new` away from a checkout.
mod sdk {
    /// (path inside the new crate, contents). The SDK's bindings read the WIT from
    /// `../../wit`, so vendored at `vendor/sluice-plugin` it finds `wit/` at the crate root.
    pub const FILES: &[(&str, &str)] = &[
        (
            "vendor/sluice-plugin/Cargo.toml",
            include_str!("../../../plugins/sdk/Cargo.toml"),
        ),
        (
            "vendor/sluice-plugin/src/lib.rs",
            include_str!("../../../plugins/sdk/src/lib.rs"),
        ),
        (
            "vendor/sluice-plugin/src/config.rs",
            include_str!("../../../plugins/sdk/src/config.rs"),
        ),
        (
            "vendor/sluice-plugin/src/log.rs",
            include_str!("../../../plugins/sdk/src/log.rs"),
        ),
        (
            "vendor/sluice-plugin/src/record.rs",
            include_str!("../../../plugins/sdk/src/record.rs"),
        ),
        (
            "vendor/sluice-plugin/src/runtime.rs",
            include_str!("../../../plugins/sdk/src/runtime.rs"),
        ),
        (
            "vendor/sluice-plugin/src/testing.rs",
            include_str!("../../../plugins/sdk/src/testing.rs"),
        ),
        (
            "vendor/sluice-plugin/src/json.rs",
            include_str!("../../../plugins/sdk/src/json.rs"),
        ),
        (
            "vendor/sluice-plugin/src/task.rs",
            include_str!("../../../plugins/sdk/src/task.rs"),
        ),
        (
            "wit/processor.wit",
            include_str!("../../../wit/processor.wit"),
        ),
    ];

    pub const VENDOR_DIR: &str = "vendor/sluice-plugin";

    /// Where the SDK was when this binary was built: used in place if still there, so a
    /// plugin made in a checkout follows the SDK's changes.
    pub const CHECKOUT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");
}

/// Where a new plugin crate gets the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A path dependency on an SDK checkout.
    Path(PathBuf),
    /// Copies of the SDK and the WIT written into the new crate.
    Vendored,
}

impl SdkSource {
    /// The checkout this binary was built from, if it is still there; else vendored copies.
    pub fn detect() -> SdkSource {
        match Path::new(sdk::CHECKOUT_DIR).canonicalize() {
            Ok(p) if p.join("Cargo.toml").is_file() => SdkSource::Path(p),
            _ => SdkSource::Vendored,
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        // `Self` is the one keyword a camel-cased name can hit.
        && name != "self"
}

fn camel_case(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `sluice plugin new NAME`: writes a plugin crate `PARENT/NAME/` that builds as is, with a
/// pipeline manifest `NAME.toml`. Returns the crate's directory.
pub fn scaffold(name: &str, parent: &Path) -> Result<PathBuf, BuildError> {
    scaffold_with(name, parent, &SdkSource::detect())
}

pub fn scaffold_with(
    name: &str,
    parent: &Path,
    sdk_source: &SdkSource,
) -> Result<PathBuf, BuildError> {
    let dir = new_plugin_dir(name, parent)?;
    let sdk_dep = match sdk_source {
        SdkSource::Path(p) => p.display().to_string(),
        SdkSource::Vendored => sdk::VENDOR_DIR.to_string(),
    };
    // Quoted by the TOML serializer: a checkout path may hold anything.
    let sdk_dep = toml::Value::String(sdk_dep).to_string();
    let ty = camel_case(name);
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), cargo_toml(name, &sdk_dep)),
        ("src/lib.rs".into(), lib_rs(name, &ty)),
        (format!("{name}.toml"), manifest_toml(name)),
        (".gitignore".into(), "/target\n/*.wasm\n".into()),
    ];
    if *sdk_source == SdkSource::Vendored {
        files.extend(
            sdk::FILES
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string())),
        );
    }
    write_files(&dir, files)?;
    Ok(dir)
}

/// `PARENT/NAME` for a new plugin: the name checked, and the directory not there yet.
pub(crate) fn new_plugin_dir(name: &str, parent: &Path) -> Result<PathBuf, BuildError> {
    if !valid_name(name) {
        return Err(BuildError::BadName(name.to_string()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(BuildError::Exists(dir));
    }
    Ok(dir)
}

/// Writes each (path inside `dir`, contents), making the directories on the way.
pub(crate) fn write_files<C: AsRef<[u8]>>(
    dir: &Path,
    files: impl IntoIterator<Item = (String, C)>,
) -> Result<(), BuildError> {
    for (path, contents) in files {
        let path = dir.join(path);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        std::fs::write(&path, contents).map_err(io_err(&path))?;
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk_path_toml: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-plugin = {{ path = {sdk_path_toml} }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
panic = "abort"
opt-level = "s"
lto = true
codegen-units = 1

# A workspace of its own, even when created inside another project.
[workspace]
"#
    )
}

fn lib_rs(name: &str, ty: &str) -> String {
    format!(
        r##"//! {name}: a sluice processing plugin.
//!
//! `sluice plugin build .` writes {name}.wasm next to {name}.toml; copy both into the broker's
//! plugins directory to deploy it, and again to upgrade it in place. `cargo test` runs the
//! tests below natively.

/// The `[config]` table of {name}.toml.
#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct {ty}Settings {{
    /// Written into each record as a header, if set.
    pub tag: Option<String>,
}}

/// What the plugin remembers. The SDK snapshots it at the broker's checkpoints and restores
/// it after a restart or an upgrade: add fields with `#[serde(default)]` so that a new
/// version reads what the old one wrote.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct {ty}State {{
    pub records: u64,
}}

pub struct {ty} {{
    settings: {ty}Settings,
}}

impl sluice_plugin::Plugin for {ty} {{
    type State = {ty}State;

    fn init(config: &sluice_plugin::Config) -> Result<Self, String> {{
        // An Err refuses the config: the pipeline does not start and the broker says why.
        Ok({ty} {{
            settings: config.parse()?,
        }})
    }}

    fn process(
        &mut self,
        state: &mut {ty}State,
        record: &sluice_plugin::Record,
    ) -> sluice_plugin::Outcome {{
        state.records += 1;

        // Other outcomes:
        //   sluice_plugin::Outcome::Keep             forward the record unchanged
        //   sluice_plugin::Outcome::Drop             forward nothing
        //   sluice_plugin::Outcome::fail("why")      to the dead-letter topic, e.g. on
        //                                            `record.json::<T>()` errors
        //   sluice_plugin::Outcome::retry("why")     try again after the retry backoff
        //   sluice_plugin::Outcome::Emit(vec![..])   several records, e.g. with
        //                                            `.to_topic("other")` to route them
        // Logging: sluice_plugin::log::info!("seen {{}} records", state.records);
        let mut out = record.to_output();
        if let Some(tag) = &self.settings.tag {{
            out = out.header("tag", tag.as_str());
        }}
        sluice_plugin::Outcome::emit(out)
    }}
}}

sluice_plugin::export_plugin!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{{Outcome, Output, Record}};

    #[test]
    fn passes_records_through_and_counts_them() {{
        let mut h = Harness::<{ty}>::new(r#"{{"tag": "t"}}"#).unwrap();
        let got = h.process(Record::new("hello").with_key("k"));
        assert_eq!(
            got,
            Outcome::emit(Output::value("hello").key("k").header("tag", "t"))
        );

        let mut restarted = Harness::<{ty}>::new("{{}}").unwrap();
        restarted.restore(&h.snapshot()).unwrap();
        assert_eq!(restarted.state().records, 1);
    }}
}}
"##
    )
}

fn manifest_toml(name: &str) -> String {
    format!(
        r#"# The pipeline {name}: put this file and {name}.wasm in the broker's plugins directory.
inputs = ["{name}-in"]
output = "{name}-out"

# The defaults, for reference:
# wasm = "{name}.wasm"
# dead_letter = "{name}.dlq"  # where Outcome::fail(..) records go, with the reason
# start = "earliest"          # or "latest": where a new pipeline starts reading
# tick_ms = 1000              # how often Plugin::tick runs
# partitioning = "auto"       # records keeping their key keep their partition number;
#                             # "input": all do; "key": murmur2 of the key
#
# [event_time]                # judge records by their timestamps (Plugin::on_watermark)
# lateness_ms = 0             # how far behind its partition's newest a record may come
# late_topic = "{name}.dlq"   # where records behind the watermark go
# idle_timeout_ms = 10000     # only if producers may go silent for good
#
# [retry]                     # for Outcome::retry(..)
# max_attempts = 3
# backoff_ms = 1000
#
# [limits]                    # per instance (one per input partition)
# memory_mb = 64
# cpu_ms_per_call = 100

# Handed to Plugin::init as JSON.
[config]
tag = "{name}"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names() {
        for ok in ["demo", "my-plugin", "a_b-2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1x", "-x", "a b", "a/b", "../x", "self", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(camel_case("my-plugin_x"), "MyPluginX");
        assert_eq!(camel_case("a--b"), "AB");
    }

    #[test]
    fn the_scaffolded_manifest_is_accepted() {
        let text = manifest_toml("demo");
        let m = super::super::manifest::Manifest::parse(Path::new("/p/demo.toml"), &text)
            .expect("the manifest `plugin new` writes must parse");
        assert_eq!(m.wasm, PathBuf::from("/p/demo.wasm"));
        assert_eq!(m.config_json, r#"{"tag":"demo"}"#);
    }

    #[test]
    fn scaffold_writes_a_standalone_crate_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = scaffold_with("my-plugin", tmp.path(), &SdkSource::Vendored).unwrap();
        for f in [
            "Cargo.toml",
            "src/lib.rs",
            "my-plugin.toml",
            "vendor/sluice-plugin/src/lib.rs",
            "wit/processor.wit",
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        let cargo: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(cargo.contains_key("workspace"));
        assert_eq!(
            cargo["dependencies"]["sluice-plugin"]["path"].as_str(),
            Some("vendor/sluice-plugin")
        );
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("impl sluice_plugin::Plugin for MyPlugin"));
        assert!(matches!(
            scaffold_with("my-plugin", tmp.path(), &SdkSource::Vendored),
            Err(BuildError::Exists(_))
        ));

        let odd = tmp.path().join("a \"quoted\" dir");
        let dir = scaffold_with("p", tmp.path(), &SdkSource::Path(odd.clone())).unwrap();
        let cargo: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            cargo["dependencies"]["sluice-plugin"]["path"].as_str(),
            odd.to_str()
        );
    }

    #[test]
    fn componentize_refuses_what_is_not_a_core_module() {
        let e = componentize(b"hello").unwrap_err().to_string();
        assert!(e.contains("not a WebAssembly module"), "{e}");
        let e = componentize(b"\0asm\x0d\0\x01\0").unwrap_err().to_string();
        assert!(e.contains("already a component"), "{e}");
        // A valid module without the WIT custom section: nothing to export.
        let e = componentize(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(e.contains("does not export init, process"), "{e}");
    }

    #[test]
    fn artifacts_are_read_from_cargo_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///p/upper#0.1.0","target":{"kind":["cdylib"],"crate_types":["cdylib"],"name":"upper"},"filenames":["/t/wasm32-unknown-unknown/release/upper.wasm"]}"#;
        assert_eq!(
            wasm_artifact(line),
            Some((
                "path+file:///p/upper#0.1.0".to_string(),
                PathBuf::from("/t/wasm32-unknown-unknown/release/upper.wasm")
            ))
        );
        let rlib = r#"{"reason":"compiler-artifact","package_id":"x","target":{"crate_types":["lib"]},"filenames":["/t/libx.rlib"]}"#;
        assert_eq!(wasm_artifact(rlib), None);
        assert_eq!(
            wasm_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(wasm_artifact("not json"), None);
    }

    /// A stand-in rustc whose `--print sysroot` is `root`.
    fn fake_rustc(dir: &Path, name: &str, root: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{}'\n", root.display())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn toolchain_detection_prefers_an_installed_target_then_debian() {
        let tmp = tempfile::tempdir().unwrap();
        let bare = tmp.path().join("bare");
        let with_target = tmp.path().join("rustup");
        let with_src = tmp.path().join("usr");
        std::fs::create_dir_all(with_target.join("lib/rustlib/wasm32-unknown-unknown/lib"))
            .unwrap();
        std::fs::create_dir_all(with_src.join("lib/rustlib/src/rust/library/std")).unwrap();
        let installed = fake_rustc(tmp.path(), "installed", &with_target);
        let plain = fake_rustc(tmp.path(), "plain", &bare);
        let debian = fake_rustc(tmp.path(), "debian", &with_src);
        let missing = tmp.path().join("no-such-rustc");
        let dir = tmp.path();

        assert_eq!(
            detect_with(&installed, &debian, dir).unwrap(),
            Toolchain::Installed
        );
        assert_eq!(
            detect_with(&plain, &debian, dir).unwrap(),
            Toolchain::BuildStd {
                rustc: debian.clone()
            }
        );
        assert_eq!(
            detect_with(&missing, &debian, dir).unwrap(),
            Toolchain::BuildStd { rustc: debian }
        );
        let e = detect_with(&plain, &missing, dir).unwrap_err();
        assert!(matches!(e, BuildError::NoToolchain));
        assert!(e
            .to_string()
            .starts_with("no wasm32 toolchain: run `rustup target add"));
    }

    #[test]
    fn a_directory_without_a_crate_is_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = build_plugin(tmp.path(), None).unwrap_err();
        assert!(matches!(e, BuildError::NotACrate(_)), "{e}");
    }

    #[test]
    fn every_sdk_source_file_is_vendored() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src");
        for e in std::fs::read_dir(src).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let vendored = format!("vendor/sluice-plugin/src/{name}");
            assert!(
                sdk::FILES.iter().any(|(p, _)| *p == vendored),
                "plugins/sdk/src/{name} is not in build.rs's vendored SDK (sdk::FILES)"
            );
        }
    }
}
