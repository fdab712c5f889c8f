//! Helpers shared by push channels: account parameters and the devices of
//! one platform in a batch of subscriptions.

use crate::bindings::accounts::Account;
use crate::filter::Columns;

/// A public parameter of an account (`topic`, `project_id`...).
pub fn param(account: &Account, name: &str) -> Option<String> {
    account
        .params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// For each subscription of a batch, its device token when it is a device of
/// `platform` (the `platform` column), else why it is left out: `not {kind}`
/// or `missing` when it has no token.
pub fn devices(
    columns: &Columns,
    platform: &str,
    kind: &str,
    missing: &str,
) -> Result<Vec<Result<String, String>>, String> {
    let token = columns
        .get("token")
        .ok_or("the dimension has no `token` attribute")?;
    let platforms = columns
        .get("platform")
        .ok_or("the dimension has no `platform` attribute")?;
    Ok((0..token.len())
        .map(|i| {
            if platforms.text(i).as_deref() != Some(platform) {
                return Err(format!("not {kind}"));
            }
            token.text(i).ok_or_else(|| missing.to_string())
        })
        .collect())
}
