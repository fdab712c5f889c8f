//! `crosscast:plugin/log`: guest lines into the host's tracing log.

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::log::{Host, Level};

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.host_calls += 1;
        let (run, activity, plugin) = (self.ctx.run, &self.ctx.activity, &self.ctx.plugin);
        match level {
            Level::Trace => tracing::trace!(run, activity, plugin, "{message}"),
            Level::Debug => tracing::debug!(run, activity, plugin, "{message}"),
            Level::Info => tracing::info!(run, activity, plugin, "{message}"),
            Level::Warn => tracing::warn!(run, activity, plugin, "{message}"),
            Level::Error => tracing::error!(run, activity, plugin, "{message}"),
        }
        Ok(())
    }
}
