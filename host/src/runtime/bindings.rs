//! Host bindings for the two plugin worlds, generated from `wit/`.
//!
//! The channel world shares the activity world's imports (types, log, clock,
//! attributes) so one host implementation serves both.

/// Bindings of the `activity-plugin` world.
pub mod activity {
    wasmtime::component::bindgen!({
        world: "activity-plugin",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "crosscast:plugin/population@0.1.0.population": crate::caps::population::Cursor,
        },
    });
}

/// Bindings of the `channel-plugin` world.
pub mod channel {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "crosscast:plugin/types@0.1.0": super::activity::crosscast::plugin::types,
            "crosscast:plugin/log@0.1.0": super::activity::crosscast::plugin::log,
            "crosscast:plugin/clock@0.1.0": super::activity::crosscast::plugin::clock,
            "crosscast:plugin/attributes@0.1.0": super::activity::crosscast::plugin::attributes,
        },
    });
}
