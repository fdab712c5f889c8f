//! Which contract a component was built against: the world version the SDK
//! stamped in its `crosscast-sdk` custom section, else the version of the
//! `crosscast:plugin` interfaces it exports (a 0.4.0 world exports its
//! 0.1.0 or 0.3.0 interface and a 0.4.0 preflight). Read before linking, so a plugin
//! built for a newer contract is refused by name rather than by a linker
//! error about a missing import.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

/// The custom section the SDK's export macros write (`sdk=V;world=W`).
pub const STAMP_SECTION: &str = "crosscast-sdk";

/// The newest version of each world this host loads.
pub const SUPPORTED: &[(&str, Version)] = &[
    ("activity", Version(0, 5, 0)),
    ("channel", Version(0, 4, 0)),
];

/// A `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `1.2.3` (pre-release and build suffixes are not used here).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What a component says it was built against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    /// `activity` or `channel`.
    pub interface: String,
    /// The world's version.
    pub version: Version,
    /// The SDK version, when the SDK stamped the component.
    pub sdk: Option<String>,
}

impl Contract {
    /// Reads the stamp, or else the exports, and refuses a contract newer
    /// than this host's.
    pub fn read(
        engine: &Engine,
        component: &Component,
        bytes: &[u8],
    ) -> Result<Contract, PluginError> {
        let contract = match stamp(bytes) {
            Some(stamp) => parse_stamp(&stamp).ok_or_else(|| {
                PluginError::Invalid(format!(
                    "the component's `{STAMP_SECTION}` section is not an SDK stamp: `{stamp}`"
                ))
            })?,
            None => exported(engine, component)?,
        };
        contract.check()?;
        Ok(contract)
    }

    /// The world's full name, `crosscast:plugin/channel-plugin@0.4.0`.
    pub fn interface_name(&self) -> String {
        format!(
            "crosscast:plugin/{}-plugin@{}",
            self.interface, self.version
        )
    }

    /// Refuses an interface this host does not know or a newer version.
    fn check(&self) -> Result<(), PluginError> {
        let built = match &self.sdk {
            Some(sdk) => format!(" (built with crosscast-sdk {sdk})"),
            None => String::new(),
        };
        match SUPPORTED.iter().find(|(i, _)| *i == self.interface) {
            Some((_, newest)) if self.version <= *newest => Ok(()),
            Some((_, newest)) => Err(PluginError::TooNew(format!(
                "the component implements {}{built}, newer than this crosscast {} loads \
                 ({} up to {newest}): upgrade crosscast, or build the plugin with an SDK \
                 that targets {newest} (see docs/plugins.md, \"Versions\")",
                self.interface_name(),
                env!("CARGO_PKG_VERSION"),
                self.interface,
            ))),
            None => Err(PluginError::Invalid(format!(
                "the component implements {}{built}, an interface this crosscast does not know \
                 (it loads activity and channel plugins)",
                self.interface_name()
            ))),
        }
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.interface_name())?;
        match &self.sdk {
            Some(sdk) => write!(f, ", crosscast-sdk {sdk}"),
            None => f.write_str(", no SDK stamp"),
        }
    }
}

/// The SDK's stamp, searched in the component and its nested core modules.
fn stamp(bytes: &[u8]) -> Option<String> {
    wasmparser::Parser::new(0)
        .parse_all(bytes)
        .filter_map(Result::ok)
        .find_map(|payload| match payload {
            wasmparser::Payload::CustomSection(s) if s.name() == STAMP_SECTION => {
                Some(String::from_utf8_lossy(s.data()).into_owned())
            }
            _ => None,
        })
}

/// `sdk=0.1.0;world=crosscast:plugin/channel-plugin@0.3.0`.
fn parse_stamp(stamp: &str) -> Option<Contract> {
    let mut sdk = None;
    let mut world = None;
    for part in stamp.split(';') {
        match part.split_once('=')? {
            ("sdk", v) => sdk = Some(v.to_string()),
            ("world", w) => world = Some(w),
            // Later SDKs may say more; what this host needs is above.
            _ => {}
        }
    }
    let (name, version) = world?.strip_prefix("crosscast:plugin/")?.split_once('@')?;
    Some(Contract {
        interface: name.strip_suffix("-plugin")?.to_string(),
        version: Version::parse(version)?,
        sdk,
    })
}

/// The `crosscast:plugin` interface a component exports, for components the
/// SDK did not stamp (built with wit-bindgen alone, or an older SDK).
fn exported(engine: &Engine, component: &Component) -> Result<Contract, PluginError> {
    let ty = component.component_type();
    let exports: Vec<(String, Version)> = ty
        .exports(engine)
        .filter_map(|(name, _)| {
            let (interface, version) = name.strip_prefix("crosscast:plugin/")?.split_once('@')?;
            Some((interface.to_string(), Version::parse(version)?))
        })
        .collect();
    // A preflight export raises the world's version to its own.
    let preflight = |interface: &str| {
        exports
            .iter()
            .filter(|(i, _)| i.strip_suffix("-preflight") == Some(interface))
            .map(|(_, v)| *v)
            .max()
    };
    let found: Vec<Contract> = exports
        .iter()
        .filter(|(i, _)| !i.ends_with("-preflight"))
        .map(|(interface, version)| Contract {
            interface: interface.clone(),
            version: preflight(interface).map_or(*version, |p| p.max(*version)),
            sdk: None,
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(PluginError::Invalid(
            "the component exports no crosscast:plugin interface (an activity exports \
             crosscast:plugin/activity, a channel crosscast:plugin/channel)"
                .into(),
        )),
        many => Err(PluginError::Invalid(format!(
            "the component exports {} crosscast:plugin interfaces ({}); a plugin implements one",
            many.len(),
            many.iter()
                .map(Contract::interface_name)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_names_the_sdk_and_the_world() {
        let c = parse_stamp("sdk=0.1.0;world=crosscast:plugin/channel-plugin@0.3.0").unwrap();
        assert_eq!(c.interface, "channel");
        assert_eq!(c.version, Version(0, 3, 0));
        assert_eq!(c.sdk.as_deref(), Some("0.1.0"));
        assert!(c.check().is_ok());
        let later = parse_stamp("sdk=0.1.0;world=crosscast:plugin/activity-plugin@0.1.0;more=x");
        assert_eq!(later.unwrap().interface, "activity");
        assert!(parse_stamp("garbage").is_none());
        assert!(parse_stamp("sdk=1;world=other:pkg/channel-plugin@0.3.0").is_none());
    }

    #[test]
    fn a_newer_interface_is_refused_by_kind() {
        let c = parse_stamp("sdk=0.9.0;world=crosscast:plugin/channel-plugin@0.5.0").unwrap();
        match c.check() {
            Err(PluginError::TooNew(m)) => {
                assert!(m.contains("crosscast:plugin/channel-plugin@0.5.0"), "{m}");
                assert!(m.contains("up to 0.4.0"), "{m}");
                assert!(m.contains("crosscast-sdk 0.9.0"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let v = Version::parse("0.10.0").unwrap();
        assert!(
            v > Version(0, 3, 0),
            "versions compare as numbers, not text"
        );
        assert!(Version::parse("0.3").is_none() && Version::parse("0.3.0.1").is_none());
    }
}
