//! What a plugin's config names outside itself, as 0.4.0 plugins declare
//! it (`activity-preflight`, `channel-preflight`): read on the instance
//! that checked the config, for `validate` to check against the data and
//! the accounts. Plugins of earlier contracts declare nothing.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::HostState;
use super::bindings::activity_v4::crosscast::plugin0_4_0::references as wit;
use super::bindings::activity_v4::exports::crosscast::plugin0_4_0::activity_preflight;
use super::bindings::channel_v4::exports::crosscast::plugin0_4_0::channel_preflight;

/// Something outside a config that it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referent {
    /// An attribute path of the records the plugin reads.
    Attribute(String),
    /// A dimension.
    Dimension(String),
    /// An account it sends through.
    Account(String),
    /// A parameter it reads from an account: (account, parameter).
    AccountParam(String, String),
}

/// A name in a config, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The dotted config path it is in; empty for the config table.
    pub field: String,
    /// Where it starts in the field's text, in characters.
    pub offset: Option<u32>,
    /// What it names.
    pub referent: Referent,
}

/// What a config needs from outside itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The dimension of the records an activity reads when its config
    /// fixes it; `None`: its input's (a channel: its target's).
    pub reads: Option<String>,
    /// The dimension of what it emits when it differs from what it reads.
    pub emits: Option<String>,
    /// Every name it declared.
    pub references: Vec<Reference>,
}

fn references(list: Vec<wit::Reference>) -> Vec<Reference> {
    list.into_iter()
        .map(|r| Reference {
            field: r.field,
            offset: r.offset,
            referent: match r.referent {
                wit::Referent::Attribute(a) => Referent::Attribute(a),
                wit::Referent::Dimension(d) => Referent::Dimension(d),
                wit::Referent::Account(a) => Referent::Account(a),
                wit::Referent::AccountParam((a, p)) => Referent::AccountParam(a, p),
            },
        })
        .collect()
}

/// An activity's declarations for `config`, if it exports them.
pub fn activity(
    pre: &InstancePre<HostState>,
    st: &mut Store<HostState>,
    instance: &Instance,
    config: &str,
) -> wasmtime::Result<Option<Needs>> {
    let Ok(indices) = activity_preflight::GuestIndices::new(pre) else {
        return Ok(None);
    };
    let n = indices
        .load(&mut *st, instance)?
        .call_config_needs(st, config)?;
    Ok(Some(Needs {
        reads: n.reads,
        emits: n.emits,
        references: references(n.references),
    }))
}

/// A channel's declarations for `config`, if it exports them.
pub fn channel(
    pre: &InstancePre<HostState>,
    st: &mut Store<HostState>,
    instance: &Instance,
    config: &str,
) -> wasmtime::Result<Option<Needs>> {
    let Ok(indices) = channel_preflight::GuestIndices::new(pre) else {
        return Ok(None);
    };
    let list = indices
        .load(&mut *st, instance)?
        .call_config_needs(st, config)?;
    Ok(Some(Needs {
        references: references(list),
        ..Needs::default()
    }))
}

/// The account parameters a channel may read, if it declares them.
pub fn account_params(
    pre: &InstancePre<HostState>,
    st: &mut Store<HostState>,
    instance: &Instance,
) -> wasmtime::Result<Vec<String>> {
    let Ok(indices) = channel_preflight::GuestIndices::new(pre) else {
        return Ok(Vec::new());
    };
    indices.load(&mut *st, instance)?.call_account_params(st)
}
