//! What `configure` notes a config names, for the host's preflight checks.

use crosscast_sdk::config::{self, Reference, Referent};
use crosscast_sdk::template::Templates;

fn at(field: &str, offset: Option<u32>, referent: Referent) -> Reference {
    Reference {
        field: field.into(),
        offset,
        referent,
    }
}

#[test]
fn reading_a_config_notes_each_name_at_its_place() {
    let (_, needs) = config::noting(|| {
        config::reads("dimension", "subscription");
        config::filter("filter", "app = 'x' and recipient.emial is empty").unwrap();
        Templates::compile(&[("body", "Hi {{ first_name }}, {{ recipient.email }}")]).unwrap();
        config::account("account", "smtp");
        config::account_param("account", "smtp", "topic");
    });
    assert_eq!(needs.reads.as_deref(), Some("subscription"));
    assert_eq!(needs.emits, None);
    use Referent::*;
    assert_eq!(
        needs.references,
        [
            at("dimension", None, Dimension("subscription".into())),
            at("filter", Some(0), Attribute("app".into())),
            at("filter", Some(14), Attribute("recipient.emial".into())),
            at("body", Some(6), Attribute("first_name".into())),
            at("body", Some(24), Attribute("recipient.email".into())),
            at("account", None, Account("smtp".into())),
            at("account", None, AccountParam("smtp".into(), "topic".into())),
        ]
    );
    // Outside `noting` (building messages), nothing is kept.
    config::account("account", "smtp");
    let (_, again) = config::noting(|| ());
    assert!(again.references.is_empty());
}
