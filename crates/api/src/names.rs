//! The shared vocabulary: [`ModuleName`], [`Version`] and [`ModuleRef`]
//! (`name@version`), each validated here and nowhere else, so the base, the
//! controller, manifests and the CLI accept exactly the same spellings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a module name, a version or a `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// What was given.
    pub given: String,
    /// What was expected, with an example, ready to show to a person.
    pub expected: &'static str,
    /// `module name`, `version` or `module reference`.
    pub what: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a {}: {}",
            self.given, self.what, self.expected
        )
    }
}

impl std::error::Error for NameError {}

/// The rule for module names, as shown to people.
pub const MODULE_NAME_RULE: &str = "use 1-63 lowercase letters, digits and `-`, starting with a letter \
     and ending with a letter or digit (e.g. `orders`)";

/// The rule for versions, as shown to people.
pub const VERSION_RULE: &str = "use 1-64 letters, digits, `.`, `-`, `+` or `_` (e.g. `1.4.0`)";

/// A module name: 1-63 lowercase ASCII letters, digits and `-`, starting
/// with a letter and ending with a letter or digit. It is a DNS label (a
/// module is called at `http://<name>.berth/`) and a valid cargo package name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModuleName(String);

impl ModuleName {
    /// Checks `name` against the module-name rule.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(NameError {
                given: name.to_string(),
                expected: MODULE_NAME_RULE,
                what: "module name",
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A module version: 1-64 ASCII letters, digits, `.`, `-`, `+` or `_`
/// (semver fits; so does a build id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl Version {
    /// Checks `version` against the version rule.
    pub fn parse(version: &str) -> Result<Self, NameError> {
        let ok = !version.is_empty()
            && version.len() <= 64
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
        if ok {
            Ok(Self(version.to_string()))
        } else {
            Err(NameError {
                given: version.to_string(),
                expected: VERSION_RULE,
                what: "version",
            })
        }
    }

    /// The version.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_like {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::parse(&s)
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_like!(ModuleName);
string_like!(Version);

/// One version of one module, spelled `name@version` wherever it is shown,
/// stored or sent (record keys, heartbeats, the `x-berth-module` header).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModuleRef {
    /// The module.
    pub name: ModuleName,
    /// The version.
    pub version: Version,
}

impl ModuleRef {
    /// `name@version`, both checked.
    pub fn new(name: &str, version: &str) -> Result<Self, NameError> {
        Ok(Self {
            name: ModuleName::parse(name)?,
            version: Version::parse(version)?,
        })
    }

    /// `name@version` for strings already checked elsewhere (or only shown):
    /// the spelling without validation, for labels and keys.
    pub fn label(name: &str, version: &str) -> String {
        format!("{name}@{version}")
    }

    /// Splits a `name@version` label without validating either half; `None`
    /// when there is no `@`.
    pub fn split(label: &str) -> Option<(&str, &str)> {
        label.split_once('@')
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for ModuleRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (name, version) = Self::split(s).ok_or_else(|| NameError {
            given: s.to_string(),
            expected: "write it as `name@version` (e.g. `orders@1.4.0`)",
            what: "module reference",
        })?;
        Self::new(name, version)
    }
}

impl TryFrom<String> for ModuleRef {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<ModuleRef> for String {
    fn from(r: ModuleRef) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_follow_one_rule() {
        for good in ["orders", "a", "a1", "order-v2", &"a".repeat(63)] {
            assert!(ModuleName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1orders",
            "-a",
            "a-",
            "Orders",
            "a_b",
            "a.b",
            &"a".repeat(64),
        ] {
            let e = ModuleName::parse(bad).unwrap_err();
            assert!(e.to_string().contains("is not a module name"), "{e}");
            assert!(e.to_string().contains("starting with a letter"), "{e}");
        }
    }

    #[test]
    fn versions_follow_one_rule() {
        for good in ["1.4.0", "1.0.0-rc.1+build_7", "v2"] {
            assert!(Version::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1 0", "1/0", &"1".repeat(65)] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn module_refs_round_trip_as_name_at_version() {
        let r: ModuleRef = "orders@1.4.0".parse().unwrap();
        assert_eq!(r.name, "orders");
        assert_eq!(r.version, "1.4.0");
        assert_eq!(r.to_string(), "orders@1.4.0");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"orders@1.4.0\"");
        let back: ModuleRef = serde_json::from_str("\"orders@1.4.0\"").unwrap();
        assert_eq!(back, r);
        assert!("orders".parse::<ModuleRef>().is_err());
        assert!("Orders@1".parse::<ModuleRef>().is_err());
        assert!(serde_json::from_str::<ModuleName>("\"-x\"").is_err());
    }
}
