//! The SDK as a third party meets it: the WIT it binds ships inside it, a
//! component says what it was built against, and install is honest about
//! versions (issue 29).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Env, plugin_dir, root};

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn the_sdk_ships_the_wit_it_binds_identical_to_the_repository_s() {
    let shipped = files(&root().join("sdk/wit"));
    let mut contract = files(&root().join("wit"));
    // The contract's README explains the folders; the SDK's docs do that.
    contract.remove("README.md");
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        contract.keys().collect::<Vec<_>>(),
        "sdk/wit and wit/ hold different files: copy wit/ into sdk/wit"
    );
    for (path, bytes) in &contract {
        assert!(
            shipped[path] == *bytes,
            "sdk/wit/{path} differs from wit/{path}: copy wit/ into sdk/wit"
        );
    }
    // And the SDK binds nothing outside its own package.
    let lib = std::fs::read_to_string(root().join("sdk/src/lib.rs")).unwrap();
    assert!(
        !lib.contains("\"../"),
        "sdk/src/lib.rs reaches outside sdk/"
    );
}

/// A component with one more custom section at the end: the same plugin,
/// name and version, with other bytes.
fn rebuilt(bytes: &[u8]) -> Vec<u8> {
    let name = b"rebuilt";
    let data = b"a later build of the same version";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(data);
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(section.len() as u8); // LEB128 of a length under 128
    out.extend_from_slice(&section);
    out
}

fn sha256_of(env: &Env, name: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {list}"))["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn install_refuses_the_same_version_with_other_bytes_unless_forced() {
    let env = Env::new();
    env.ok(&["init"]);
    let original = plugin_dir().join("crosscast_plugin_wait.wasm");
    let installed = sha256_of(&env, "wait");

    // The same bytes again: nothing to decide.
    let again = env.ok(&["plugin", "install", original.to_str().unwrap()]);
    assert!(!again.contains("replaced"), "{again}");
    assert_eq!(sha256_of(&env, "wait"), installed);

    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("wait.wasm");
    std::fs::write(&other, rebuilt(&std::fs::read(&original).unwrap())).unwrap();
    let err = env.fails(&["plugin", "install", other.to_str().unwrap()]);
    assert!(
        err.contains("plugin `wait` 0.1.0 is installed with other bytes"),
        "{err}"
    );
    assert!(
        err.contains(&installed),
        "the installed sha256 is named: {err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(sha256_of(&env, "wait"), installed, "nothing was replaced");

    let forced = env.ok(&["plugin", "install", other.to_str().unwrap(), "--force"]);
    let new = sha256_of(&env, "wait");
    assert_ne!(new, installed);
    assert!(
        forced.contains(&format!(
            "replaced wait 0.1.0: old sha256 {installed}, new sha256 {new}"
        )),
        "{forced}"
    );
}

#[test]
fn install_reports_what_a_plugin_was_built_against_and_refuses_a_newer_contract() {
    let env = Env::new();
    env.ok(&["init"]);
    let sdk = env!("CARGO_PKG_VERSION");
    let install = |file: &str| {
        env.ok(&[
            "plugin",
            "install",
            plugin_dir().join(file).to_str().unwrap(),
            "--force",
        ])
    };
    // Built with the SDK: the stamp names the SDK and the world.
    let out = install("crosscast_plugin_split.wasm");
    assert!(
        out.contains(&format!(
            "built against crosscast:plugin/activity@0.1.0, crosscast-sdk {sdk}"
        )),
        "{out}"
    );
    let out = install("crosscast_plugin_sms.wasm");
    assert!(
        out.contains(&format!(
            "built against crosscast:plugin/channel@0.3.0, crosscast-sdk {sdk}"
        )),
        "{out}"
    );
    // Built with wit-bindgen alone: the version comes from the export.
    let out = install("crosscast_fixture_email_v1.wasm");
    assert!(
        out.contains("built against crosscast:plugin/channel@0.1.0, no SDK stamp"),
        "{out}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    let legacy = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "legacy-mail")
        .unwrap();
    assert_eq!(
        legacy["contract"], "crosscast:plugin/channel@0.1.0, no SDK stamp",
        "{legacy}"
    );

    // A contract from the future is refused by name, before linking.
    let future = plugin_dir().join("crosscast_fixture_future.wasm");
    let err = env.fails(&["plugin", "install", future.to_str().unwrap()]);
    assert!(
        err.contains("implements crosscast:plugin/channel@0.9.0, newer than this crosscast"),
        "{err}"
    );
    assert!(err.contains("channel up to 0.3.0"), "{err}");
    assert!(err.contains("upgrade crosscast"), "{err}");
    assert!(
        !err.contains("matching implementation"),
        "no linker error: {err}"
    );
}
