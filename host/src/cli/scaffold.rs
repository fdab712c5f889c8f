//! `crosscast plugin new activity|channel NAME`: a plugin crate that builds
//! with `cargo build --target wasm32-wasip2 --profile plugin` and installs as
//! is. Its `src/lib.rs` is one of the examples the workspace builds and
//! tests (`examples/plugins/`), so what the scaffold writes always compiles.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What kind of plugin to write.
#[derive(
    clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    /// A workflow activity (the example keeps a seeded sample).
    Activity,
    /// A delivery channel (the example posts JSON to a webhook).
    Channel,
}

/// The example channel, verbatim.
const CHANNEL_LIB: &str = include_str!("../../../examples/plugins/webhook/src/lib.rs");
/// The example activity, verbatim.
const ACTIVITY_LIB: &str = include_str!("../../../examples/plugins/sample/src/lib.rs");

/// The SDK version a scaffold depends on: this binary's.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes the crate into `dir` (a new or empty directory); `sdk` is a local
/// copy of `crosscast-sdk` to depend on instead of the registry's.
pub fn write(kind: Kind, name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: choose another --dir",
            dir.display()
        );
    }
    let sdk = match sdk {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("--sdk {}: no such directory", path.display()))?;
            if !path.join("Cargo.toml").exists() {
                bail!(
                    "--sdk {}: no Cargo.toml there (give the SDK's folder)",
                    path.display()
                );
            }
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => format!("\"{SDK_VERSION}\""),
    };
    let files: [(PathBuf, String); 5] = [
        ("Cargo.toml".into(), cargo_toml(name, &sdk)),
        ("src/lib.rs".into(), lib_rs(kind).to_string()),
        ("README.md".into(), readme(kind, name)),
        ("example.toml".into(), workflow(kind, name)),
        (".gitignore".into(), "/target\n".into()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A name that is both a crate name and a plugin name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !ok {
        bail!(
            "`{name}` cannot name a plugin: use lower-case ASCII letters, digits, `-` and `_`, \
             starting with a letter (it names the crate and the plugin in workflows)"
        );
    }
    Ok(())
}

fn lib_rs(kind: Kind) -> &'static str {
    match kind {
        Kind::Activity => ACTIVITY_LIB,
        Kind::Channel => CHANNEL_LIB,
    }
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
crosscast-sdk = {sdk}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# What the built-in plugins are built with: a component of a few hundred
# kilobytes instead of megabytes.
# cargo build --target wasm32-wasip2 --profile plugin
[profile.plugin]
inherits = "release"
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A crate of its own, even inside another workspace's folder.
[workspace]
"#
    )
}

fn readme(kind: Kind, name: &str) -> String {
    let file = name.replace('-', "_");
    let (what, setup) = match kind {
        Kind::Activity => (
            "activity: it keeps a seeded sample of its population (`percent`, `seed`) and \
             sends the rest on `rest`",
            String::new(),
        ),
        Kind::Channel => (
            "channel: it posts `{\"to\": …, \"text\": …}` to a webhook, once per recipient with \
             a mobile number",
            format!(
                "\nGive it an account (the webhook's base URL; `--secret` names a bearer \
                 token the host adds, which the plugin never sees) and grant it:\n\n\
                 ```sh\n\
                 crosscast secret set {name}-token --from-file token.txt\n\
                 crosscast account set {name} --url https://hooks.example.com --secret {name}-token --auth bearer\n\
                 crosscast plugin grant {name} --account {name}\n\
                 ```\n"
            ),
        ),
    };
    format!(
        r#"# {name}

A Crosscast {what}. `src/lib.rs` is the whole plugin.

Build it (once: `rustup target add wasm32-wasip2`) and run its tests (some
run the plugin in crosscast itself, with `crosscast_sdk::testing`: they
need `crosscast` on `PATH`, or its path in `CROSSCAST_BIN`):

```sh
cargo build --target wasm32-wasip2 --profile plugin
cargo test
```

Install it:

```sh
crosscast plugin install target/wasm32-wasip2/plugin/{file}.wasm
```
{setup}
Try it on your audience without sending anything, then for real:

```sh
crosscast run example.toml --dry-run
crosscast run example.toml
```

A new build of the same version is refused by `plugin install`: raise
`version` in `Cargo.toml`, or replace it with `--force`. See the Crosscast
repository's `docs/plugins.md` for what the SDK offers.
"#
    )
}

fn workflow(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Activity => format!(
            r#"# Recipients with an email, a seeded tenth of them set apart.
name = "{name}-example"

[activity.query]
type = "query"
next = {{ done = "control" }}

[activity.query.config]
dimension = "recipient"
filter = "email is not empty"

[activity.control]
type = "{name}"
config = {{ percent = 10, seed = 1 }}
"#
        ),
        Kind::Channel => format!(
            r#"# Recipients with a mobile number, each sent one message through {name}.
name = "{name}-example"

[activity.query]
type = "query"
next = {{ done = "notify" }}

[activity.query.config]
dimension = "recipient"
filter = "mobile is not empty"

[activity.notify]
type = "{name}"

[activity.notify.config]
account = "{name}"
path = "/messages"
text = "Hi {{{{ first_name }}}}, new arrivals are in."
"#
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_name_a_crate_and_a_plugin() {
        for good in ["hook", "my-hook", "sms_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hook", "2hook", "my hook", "hook!", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_scaffold_refuses_a_folder_in_use_and_writes_five_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        assert!(write(Kind::Channel, "hook", dir.path(), None).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
        let new = dir.path().join("hook");
        write(Kind::Channel, "hook", &new, None).unwrap();
        let cargo = std::fs::read_to_string(new.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains(&format!("crosscast-sdk = \"{SDK_VERSION}\"")),
            "{cargo}"
        );
        assert!(cargo.contains("[profile.plugin]"));
        assert_eq!(
            std::fs::read_to_string(new.join("src/lib.rs")).unwrap(),
            CHANNEL_LIB
        );
        let wf = std::fs::read_to_string(new.join("example.toml")).unwrap();
        assert!(
            wf.contains("text = \"Hi {{ first_name }}, new arrivals are in.\""),
            "{wf}"
        );
    }
}
