//! `crosscast:plugin/accounts`: the public part of granted accounts.

use crate::runtime::HostState;
use crate::runtime::bindings::channel::crosscast::plugin::accounts::{Account, Host};

impl Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<Account, String>> {
        self.host_calls += 1;
        if !self.ctx.accounts.contains(&name) {
            return Ok(Err(format!(
                "account `{name}` is not granted to plugin `{}` (grant it with `crosscast plugin grant {} --account {name}`)",
                self.ctx.plugin, self.ctx.plugin
            )));
        }
        let store = match self.ctx.store() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        match store.account(&name) {
            // The URL as the operator wrote it: a `{secret}` in it stays a
            // placeholder, filled in by the host only when it sends.
            Ok(a) => Ok(Ok(Account {
                name: a.name,
                url: a.url,
                user: a.user,
                params: a.params.into_iter().collect(),
            })),
            Err(e) => Ok(Err(e.to_string())),
        }
    }
}
