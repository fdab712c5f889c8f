//! Crosscast: durable cross-channel marketing workflows whose every activity
//! is a sandboxed WebAssembly component.
//!
//! See `ARCHITECTURE.md` for the map. In short: [`workflow`] reads and checks
//! workflow files, [`executor`] runs them on the [`store`], calling plugins
//! through the [`runtime`], which gives them the host [`caps`]; channel
//! plugins' messages go out through [`deliver`].

pub mod caps;
pub mod cli;
pub mod clock;
pub mod deliver;
pub mod doctor;
pub mod executor;
pub mod graph;
pub mod import;
pub mod interrupt;
pub mod runtime;
pub mod schedules;
pub mod serve;
pub mod signals;
pub mod spelling;
pub mod store;
pub mod timezones;
pub mod unsubscribe;
pub mod workflow;
