//! Host bindings for the plugin worlds, generated from `wit/<version>/`.
//!
//! Every channel world shares the activity world's imports (types, log,
//! clock, attributes, and 0.1.0's accounts) so one host implementation
//! serves them all.

/// Bindings of the `activity-plugin` world.
pub mod activity {
    wasmtime::component::bindgen!({
        world: "activity-plugin",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        with: {
            "crosscast:plugin/population@0.1.0.population": crate::caps::population::Cursor,
        },
    });
}

/// Bindings of the `channel-plugin@0.1.0` world (plugins built before 0.2.0).
pub mod channel {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
        },
    });
}

/// Bindings of the `channel-plugin@0.2.0` world (plugins built before 0.3.0).
pub mod channel_v2 {
    wasmtime::component::bindgen!({
        world: "crosscast:plugin/channel-plugin@0.2.0",
        path: ["../wit/0.1.0", "../wit/0.2.0"],
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
            "crosscast:plugin/accounts@0.1.0": super::channel::crosscast::plugin::accounts,
        },
    });
}

/// Bindings of the `channel-plugin@0.3.0` world: the channel interface the
/// host works with; 0.1.0 and 0.2.0 channels are adapted to it
/// (`runtime::channel`). Its imports are 0.2.0's, so one linker serves both.
pub mod channel_v3 {
    wasmtime::component::bindgen!({
        world: "crosscast:plugin/channel-plugin@0.3.0",
        path: ["../wit/0.1.0", "../wit/0.3.0"],
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
            "crosscast:plugin/accounts@0.1.0": super::channel::crosscast::plugin::accounts,
        },
    });
}

/// Bindings of the `activity-plugin@0.4.0` world: its `activity-preflight`
/// export (its `activity@0.1.0` export is called through [`activity`],
/// on the same instance) and the `references` types it imports.
pub mod activity_v4 {
    wasmtime::component::bindgen!({
        world: "crosscast:plugin/activity-plugin@0.4.0",
        path: ["../wit/0.1.0", "../wit/0.3.0", "../wit/0.4.0"],
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
            "crosscast:plugin/population@0.1.0": super::activity::crosscast::plugin::population,
            "crosscast:plugin/output@0.1.0": super::activity::crosscast::plugin::output,
        },
    });
}

/// Bindings of the `channel-plugin@0.4.0` world: its `channel-preflight`
/// export (its `channel@0.3.0` export is called through [`channel_v3`]).
pub mod channel_v4 {
    wasmtime::component::bindgen!({
        world: "crosscast:plugin/channel-plugin@0.4.0",
        path: ["../wit/0.1.0", "../wit/0.3.0", "../wit/0.4.0"],
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
            "crosscast:plugin/accounts@0.1.0": super::channel::crosscast::plugin::accounts,
            "crosscast:plugin/references@0.4.0": super::activity_v4::crosscast::plugin0_4_0::references,
        },
    });
}

/// Bindings of the `activity-plugin@0.5.0` world: the activity interface
/// the host works with (partial releases, signals); 0.1.0 activities
/// (worlds 0.1.0 and 0.4.0) are adapted to it (`runtime::activity`). Its
/// imports are 0.4.0's, so one linker serves both.
pub mod activity_v5 {
    wasmtime::component::bindgen!({
        world: "crosscast:plugin/activity-plugin@0.5.0",
        path: ["../wit/0.1.0", "../wit/0.3.0", "../wit/0.4.0", "../wit/0.5.0"],
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
            "crosscast:plugin/population@0.1.0": super::activity::crosscast::plugin::population,
            "crosscast:plugin/output@0.1.0": super::activity::crosscast::plugin::output,
            "crosscast:plugin/references@0.4.0": super::activity_v4::crosscast::plugin0_4_0::references,
        },
    });
}
