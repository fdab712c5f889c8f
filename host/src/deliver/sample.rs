//! One message built for a made-up record, before any run: `validate` has
//! each delivery's channel build it and the host vet it, so a request the
//! host would refuse (an account not granted, a recipient that is not the
//! stored address, a path without `/`, a bad header) or a `build` that
//! fails is reported with the workflow, not message by message at send time.
//!
//! The record lives in a scratch data directory of its own, removed
//! afterwards: it has every column of the real audience (documented ones
//! with plausible values, imported ones with `sample`), so what the
//! templates read exists, and the real audience is never touched.

use std::sync::Arc;

use super::vet::{Stored, Vetted, lists, vet};
use crate::caps::{Context, crash_reporter};
use crate::runtime::channel::wit;
use crate::runtime::{Loaded, Runtime};
use crate::store::audience::Row;
use crate::store::plugins::PluginRecord;
use crate::store::{OpenOptions, Store};

/// What the host would do with the sample record's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampled {
    /// It would go.
    Send,
    /// The plugin excluded the record (with its reason).
    Excluded(String),
    /// The host would refuse it (with the reason).
    Refused(String),
}

/// Documented columns' sample values; any other column gets `sample`.
const VALUES: &[(&str, &str)] = &[
    ("email", "ada.lovelace@example.com"),
    ("mobile", "+15550100000"),
    ("first_name", "Ada"),
    ("last_name", "Lovelace"),
    ("locale", "en-GB"),
    ("timezone", "Europe/London"),
    ("recipient_id", "sample-recipient"),
    ("app", "com.example.app"),
    ("platform", "ios"),
    (
        "token",
        "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1",
    ),
];

/// Builds and vets one message of `plugin` (a channel) with `config` for a
/// sample record of its target dimension.
pub fn sample(
    store: &Store,
    runtime: &Runtime,
    plugin: &PluginRecord,
    config: &str,
) -> Result<Sampled, String> {
    let Loaded::Channel(pre) = runtime
        .load(store, &plugin.sha256)
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("plugin `{}` is not a channel", plugin.name));
    };
    let scratch = Scratch::new(store, plugin)?;
    let ctx = Arc::new(Context {
        store: Some(scratch.store.clone()),
        now_ms: 0,
        run: 0,
        activity: "validate".into(),
        plugin: plugin.name.clone(),
        accounts: plugin.accounts.clone(),
        outputs: Vec::new(),
    });
    let crash = crash_reporter(plugin.name.clone(), runtime.limits());
    let mut st = runtime.new_store(ctx);
    let channel = pre.instantiate(&mut st).map_err(|e| crash(e, st.data()))?;
    let descriptor = channel.describe(&mut st).map_err(|e| crash(e, st.data()))?;
    let (dimension, id) = match descriptor.target {
        wit::Target::Recipient => ("recipient", scratch.recipient),
        wit::Target::Subscription => ("subscription", scratch.subscription),
    };
    runtime.arm(&mut st);
    let prepared = channel
        .build(&mut st, config, dimension, &[id])
        .map_err(|e| crash(e, st.data()))?
        .map_err(|m| format!("plugin `{}` could not build a message: {m}", plugin.name))?;
    if prepared.len() != 1 {
        return Err(format!(
            "plugin `{}` built {} messages for one record",
            plugin.name,
            prepared.len()
        ));
    }
    let lists = lists(store, &plugin.name, &descriptor, dimension)?;
    let stored = Stored::fetch(&scratch.store, &lists, &[id], &prepared)?;
    let message = prepared.into_iter().next().expect("one message");
    Ok(
        match vet(&lists, &stored, &plugin.accounts, &plugin.name, 0, message) {
            Vetted::Send(..) => Sampled::Send,
            Vetted::Excluded(reason) => Sampled::Excluded(reason),
            Vetted::Refused(_, failure) => Sampled::Refused(failure.message),
        },
    )
}

/// A scratch data directory with the plugin, its accounts and one sample
/// recipient with one subscription; removed when dropped.
struct Scratch {
    dir: std::path::PathBuf,
    store: Store,
    recipient: u64,
    subscription: u64,
}

impl Scratch {
    fn new(real: &Store, plugin: &PluginRecord) -> Result<Scratch, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "crosscast-sample-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let options = OpenOptions {
            create: true,
            key_file: dir.with_extension("key"),
            holder: "crosscast validate".into(),
            // One record: the smallest cache will do.
            cache_mb: 8,
        };
        let err = |e: crate::store::StoreError| e.to_string();
        let store = Store::open_with(&dir, &options).map_err(err)?;
        let mut scratch = Scratch {
            dir,
            store,
            recipient: 0,
            subscription: 0,
        };
        let component = real.component(&plugin.sha256).map_err(err)?;
        scratch.store.put_plugin(plugin, &component).map_err(err)?;
        for name in &plugin.accounts {
            if let Ok(account) = real.account(name) {
                scratch.store.put_account(&account).map_err(err)?;
            }
        }
        scratch.recipient = scratch.add(real, "recipient", Vec::new())?;
        let link = vec![("recipient", scratch.recipient)];
        scratch.subscription = scratch.add(real, "subscription", link)?;
        Ok(scratch)
    }

    /// Adds the sample record of `dimension` with every column the real
    /// audience has; returns its internal id.
    fn add(
        &self,
        real: &Store,
        dimension: &str,
        links: Vec<(&'static str, u64)>,
    ) -> Result<u64, String> {
        let err = |e: crate::store::StoreError| e.to_string();
        let key = format!("sample-{dimension}");
        let values = real
            .audience()
            .columns(dimension)
            .map_err(err)?
            .into_iter()
            .filter(|c| c != "id")
            .map(|c| {
                let v = VALUES
                    .iter()
                    .find(|(k, _)| *k == c)
                    .map_or("sample", |(_, v)| v);
                (Arc::from(c.as_str()), Some(v.to_string()))
            })
            .collect();
        let audience = self.store.audience();
        audience
            .upsert(
                dimension,
                &[Row {
                    key: key.clone(),
                    id: None,
                    values,
                    links,
                }],
            )
            .map_err(err)?;
        audience
            .lookup(dimension, &key)
            .map_err(err)?
            .ok_or_else(|| format!("the sample {dimension} was not stored"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("key"));
    }
}
