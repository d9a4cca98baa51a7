//! Plugins in Python and JavaScript/TypeScript: `sluice plugin new --lang` and
//! `sluice plugin build` for them (Rust and C are in [`super::build`]).
//!
//! Both languages ship their runtime inside the component, built by the language's own
//! packaged tool: componentize-py (PyPI) for Python, ComponentizeJS (npm) for JavaScript.
//! The build installs nothing: it looks for the tool, says exactly how to get it when it is
//! missing, and hands it the SDK and the WIT this binary carries, so a plugin builds against
//! the contract the broker speaks.
//!
//! - Python: the plugin is `app.py`; the component's entry is the SDK module
//!   `sluice_plugin`, which imports `app`.
//! - JavaScript: the plugin is `app.js` or `app.ts`, default-exporting what the SDK's
//!   `filter`, `map` or `plugin` return; it is bundled with the SDK by rolldown (which also
//!   strips TypeScript's types) into one module, which ComponentizeJS builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::build::{
    io_err, missing_exports, new_plugin_dir, write_atomically, write_files, BuildError,
};

const WIT: &str = include_str!("../../../wit/processor.wit");
const PY_SDK: &str = include_str!("../../../plugins/sdk-python/sluice_plugin.py");
const JS_SDK: &str = include_str!("../../../plugins/sdk-js/sluice-plugin.js");
const JS_SDK_TYPES: &str = include_str!("../../../plugins/sdk-js/sluice-plugin.d.ts");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    pub fn parse(s: &str) -> Result<Lang, BuildError> {
        match s {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" | "ts" | "typescript" => Ok(Lang::Js),
            "c" => Ok(Lang::C),
            other => Err(BuildError::UnknownLang(other.to_string())),
        }
    }

    /// The language of the plugin in `dir`, from its files: `None` leaves it to cargo.
    pub fn of_dir(dir: &Path) -> Option<Lang> {
        if dir.join("Cargo.toml").exists() {
            return Some(Lang::Rust);
        }
        if dir.join("build.sh").exists() && dir.join("gen/processor.h").exists() {
            return Some(Lang::C);
        }
        if dir.join("app.py").exists() {
            return Some(Lang::Python);
        }
        if dir.join("app.js").exists() || dir.join("app.ts").exists() {
            return Some(Lang::Js);
        }
        None
    }
}

/// The plugin's name: its directory's.
fn dir_name(dir: &Path) -> Result<String, BuildError> {
    let abs = std::fs::canonicalize(dir).map_err(io_err(dir))?;
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BuildError::BadName(abs.display().to_string()))
}

fn out_path(dir: &Path, out: Option<&Path>) -> Result<PathBuf, BuildError> {
    Ok(match out {
        Some(o) => o.to_path_buf(),
        None => dir.join(format!("{}.wasm", dir_name(dir)?)),
    })
}

/// A scratch directory for a build, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch, BuildError> {
        let p = std::env::temp_dir().join(format!(
            "sluice-build-{what}-{}-{}",
            std::process::id(),
            crate::broker::now_ms()
        ));
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        Ok(Scratch(p))
    }
    fn write(&self, rel: &str, contents: &str) -> Result<PathBuf, BuildError> {
        let p = self.0.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        std::fs::write(&p, contents).map_err(io_err(&p))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), BuildError> {
    let status = cmd.status().map_err(|source| BuildError::Spawn {
        command: format!("{cmd:?}"),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::ToolFailed(tool))
    }
}

/// Checks what the tool made, and puts it in place atomically (the broker may be watching).
fn finish(component: &Path, out: &Path) -> Result<PathBuf, BuildError> {
    let bytes = std::fs::read(component).map_err(io_err(component))?;
    let missing = missing_exports(&bytes);
    if !missing.is_empty() {
        return Err(BuildError::Componentize(format!(
            "the component does not export {}",
            missing.join(", ")
        )));
    }
    write_atomically(out, &bytes)?;
    Ok(out.to_path_buf())
}

/// `sluice plugin build DIR` for a Python plugin (`DIR/app.py`).
pub fn build_python(dir: &Path, out: Option<&Path>) -> Result<PathBuf, BuildError> {
    let tool = which("componentize-py", &[]).ok_or(BuildError::MissingTool {
        tool: "componentize-py",
        install: "pip install componentize-py==0.25.1",
    })?;
    let out = out_path(dir, out)?;
    let scratch = Scratch::new("py")?;
    let wit = scratch.write("wit/processor.wit", WIT)?;
    scratch.write("sdk/sluice_plugin.py", PY_SDK)?;
    let component = scratch.0.join("plugin.wasm");
    run(
        "componentize-py",
        Command::new(tool)
            .arg("-d")
            .arg(wit.parent().unwrap_or(&scratch.0))
            .args(["-w", "processor", "componentize", "sluice_plugin", "-p"])
            .arg(dir)
            .arg("-p")
            .arg(scratch.0.join("sdk"))
            .arg("-o")
            .arg(&component),
    )?;
    finish(&component, &out)
}

/// `sluice plugin build DIR` for a JavaScript or TypeScript plugin (`DIR/app.js` or
/// `DIR/app.ts`), with the tools from `DIR/node_modules` (`npm install` there) or PATH.
pub fn build_js(dir: &Path, out: Option<&Path>) -> Result<PathBuf, BuildError> {
    let dir = &std::fs::canonicalize(dir).map_err(io_err(dir))?;
    let bins = [dir.join("node_modules/.bin")];
    let componentize = which("componentize-js", &bins).ok_or(BuildError::MissingTool {
        tool: "componentize-js",
        install: "npm install (in the plugin's directory; its package.json names @bytecodealliance/componentize-js and rolldown)",
    })?;
    let rolldown = which("rolldown", &bins).ok_or(BuildError::MissingTool {
        tool: "rolldown",
        install: "npm install (in the plugin's directory; its package.json names @bytecodealliance/componentize-js and rolldown)",
    })?;
    let out = out_path(dir, out)?;
    let app = ["app.ts", "app.js"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| BuildError::NotACrate(dir.to_path_buf()))?;
    let app = std::fs::canonicalize(&app).map_err(io_err(&app))?;
    let scratch = Scratch::new("js")?;
    let wit = scratch.write("processor.wit", WIT)?;
    let sdk = scratch.write("sluice-plugin.js", JS_SDK)?;
    let entry = scratch.write(
        "entry.js",
        &format!(
            "import plugin from {app:?};\nimport {{ exportsOf }} from \"sluice-plugin\";\n\
             export const {{ init, process, tick, snapshot, restore, onWatermark }} = exportsOf(plugin);\n"
        ),
    )?;
    let bundle = scratch.0.join("bundle.js");
    // One module for ComponentizeJS: the plugin, the SDK (wherever the plugin imports it
    // from) and what else it imports, TypeScript types stripped; only the host stays outside.
    let config = scratch.write(
        "rolldown.config.mjs",
        &format!(
            "export default {{ input: {entry:?}, external: [\"sluice:plugin/host@0.1.3\"], \
             platform: \"neutral\", resolve: {{ alias: {{ \"sluice-plugin\": {sdk:?} }} }}, \
             output: {{ file: {bundle:?}, format: \"esm\" }} }};\n",
        ),
    )?;
    run(
        "rolldown",
        Command::new(rolldown)
            .current_dir(dir)
            .arg("-c")
            .arg(&config),
    )?;
    let component = scratch.0.join("plugin.wasm");
    run(
        "componentize-js",
        Command::new(componentize)
            .arg(&bundle)
            .arg("--wit")
            .arg(&wit)
            .args(["-n", "processor", "-d", "http", "fetch-event", "-o"])
            .arg(&component),
    )?;
    finish(&component, &out)
}

/// `sluice plugin build DIR` for a C plugin made by `plugin new --lang c`: its build.sh,
/// which compiles with clang and componentizes with this binary.
pub fn build_c(dir: &Path, out: Option<&Path>) -> Result<PathBuf, BuildError> {
    which("clang", &[]).ok_or(BuildError::MissingTool {
        tool: "clang",
        install: "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32",
    })?;
    let out = out_path(dir, out)?;
    let me = std::env::current_exe().map_err(io_err(Path::new("sluice")))?;
    run(
        "build.sh",
        Command::new("sh")
            .arg(dir.join("build.sh"))
            .arg(&out)
            .env("SLUICE", me),
    )?;
    Ok(out)
}

/// The C test plugin, with its generated bindings, as a starting point.
const C_FILES: &[(&str, &[u8])] = &[
    (
        "filter.c",
        include_bytes!("../../../plugins/testing/c-filter/filter.c"),
    ),
    (
        "build.sh",
        include_bytes!("../../../plugins/testing/c-filter/build.sh"),
    ),
    (
        "gen/processor.c",
        include_bytes!("../../../plugins/testing/c-filter/gen/processor.c"),
    ),
    (
        "gen/processor.h",
        include_bytes!("../../../plugins/testing/c-filter/gen/processor.h"),
    ),
    (
        "gen/processor_component_type.o",
        include_bytes!("../../../plugins/testing/c-filter/gen/processor_component_type.o"),
    ),
];

/// `tool` in one of `dirs`, else on PATH.
fn which(tool: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    dirs.iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `sluice plugin new NAME --lang python|js`: a plugin directory that builds as is.
pub fn scaffold(name: &str, parent: &Path, lang: Lang) -> Result<PathBuf, BuildError> {
    let dir = new_plugin_dir(name, parent)?;
    let text = |path: &str, contents: String| (path.to_string(), contents.into_bytes());
    let files: Vec<(String, Vec<u8>)> = match lang {
        Lang::Python => vec![
            text("app.py", PY_APP.replace("NAME", name)),
            text(&format!("{name}.toml"), manifest(name, "Python")),
            text(".gitignore", "/*.wasm\n__pycache__/\n".into()),
        ],
        Lang::Js => vec![
            text("app.ts", JS_APP.replace("NAME", name)),
            text(&format!("{name}.toml"), manifest(name, "TypeScript")),
            text("package.json", JS_PACKAGE.replace("NAME", name)),
            // For editors: the SDK's types (the build brings the SDK itself).
            text(
                "sluice-plugin.d.ts",
                format!("declare module \"sluice-plugin\" {{\n{JS_SDK_TYPES}}}\n"),
            ),
            text(".gitignore", "/*.wasm\n/node_modules/\n".into()),
        ],
        Lang::C => {
            let mut files = vec![
                text(&format!("{name}.toml"), manifest(name, "C")),
                text(".gitignore", "/*.wasm\n".into()),
            ];
            files.extend(C_FILES.iter().map(|&(path, contents)| {
                match path {
                    // The script names its default output after the plugin.
                    "build.sh" => text(
                        path,
                        String::from_utf8_lossy(contents)
                            .replace("c-filter.wasm", &format!("{name}.wasm")),
                    ),
                    _ => (path.to_string(), contents.to_vec()),
                }
            }));
            files
        }
        Lang::Rust => unreachable!("Rust plugins are scaffolded in build.rs"),
    };
    write_files(&dir, files)?;
    Ok(dir)
}

fn manifest(name: &str, lang: &str) -> String {
    format!(
        r#"# The pipeline {name} ({lang}): put this file and {name}.wasm in the broker's plugins
# directory. Options as for Rust plugins (see the README's "The manifest").
inputs = ["{name}-in"]
output = "{name}-out"
wasm = "{name}.wasm"

[limits]
# The language runtime lives in each instance.
memory_mb = 128
cpu_ms_per_call = 1000

# Handed to the plugin's init as a dict / an object.
[config]
tag = "{name}"
"#
    )
}

const PY_APP: &str = r#""""The NAME plugin: counts records and tags each with its number.

Build with `sluice plugin build .` (needs componentize-py: pip install componentize-py).
A filter is shorter still:

    from sluice_plugin import filter

    @filter
    def buys(r):
        return "buy" in (r.value_str() or "")
"""
from sluice_plugin import *


@plugin
class Counter(Plugin):
    def init(self, config):
        self.tag = config.get("tag", "NAME")
        self.state = {"records": 0}  # snapshotted for you: survives restarts and reloads

    def process(self, r):
        self.state["records"] += 1
        return r.to_output().header("n", str(self.state["records"])).header("tag", self.tag)
"#;

const JS_APP: &str = r#"// The NAME plugin: counts records and tags each with its number.
//
// Build with `npm install` once, then `sluice plugin build .`. A filter is shorter still:
//
//   import { filter } from "sluice-plugin";
//   export default filter(r => r.valueStr()?.includes("buy") ?? false);
import { plugin } from "sluice-plugin";

export default plugin({
  init(config: { tag?: string }) {
    this.tag = config.tag ?? "NAME";
    this.state = { records: 0 }; // snapshotted for you: survives restarts and reloads
  },
  process(r) {
    this.state.records += 1;
    return r.toOutput().header("n", String(this.state.records)).header("tag", this.tag);
  },
});
"#;

// ComponentizeJS 0.23.0 imports @bytecodealliance/preview2-shim at run time but lists it
// only among its devDependencies: the plugin names it itself, or `npm ci` leaves it out.
const JS_PACKAGE: &str = r#"{
  "name": "NAME",
  "private": true,
  "type": "module",
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0",
    "rolldown": "1.3.4"
  }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_told_apart_by_their_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Lang::of_dir(d.path()), None);
        let c = scaffold("c-one", d.path(), Lang::C).unwrap();
        assert_eq!(Lang::of_dir(&c), Some(Lang::C));
        std::fs::write(d.path().join("app.ts"), "").unwrap();
        assert_eq!(Lang::of_dir(d.path()), Some(Lang::Js));
        std::fs::write(d.path().join("app.py"), "").unwrap();
        assert_eq!(Lang::of_dir(d.path()), Some(Lang::Python));
        std::fs::write(d.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(Lang::of_dir(d.path()), Some(Lang::Rust));
        assert!(Lang::parse("cobol").is_err());
        assert_eq!(Lang::parse("typescript").unwrap(), Lang::Js);
    }

    #[test]
    fn scaffolds_write_a_plugin_and_its_manifest_and_refuse_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        for (lang, app) in [
            (Lang::Python, "app.py"),
            (Lang::Js, "app.ts"),
            (Lang::C, "filter.c"),
        ] {
            let name = format!("p-{app}").replace('.', "-");
            let dir = scaffold(&name, d.path(), lang).unwrap();
            assert!(dir.join(app).exists());
            let m = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
            crate::plugin::manifest::Manifest::parse(&dir.join(format!("{name}.toml")), &m)
                .unwrap();
            assert!(matches!(
                scaffold(&name, d.path(), lang),
                Err(BuildError::Exists(_))
            ));
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_how_to_install_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.js"), "").unwrap();
        // No node_modules here and (in this test's PATH) no rolldown or componentize-js.
        let saved = std::env::var_os("PATH");
        match build_js(d.path(), None) {
            Err(BuildError::MissingTool { tool, install }) => {
                assert!(tool == "componentize-js" || tool == "rolldown");
                assert!(install.contains("npm install"));
            }
            other if which("componentize-js", &[]).is_some() => drop(other),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::env::var_os("PATH"), saved);
    }
}
