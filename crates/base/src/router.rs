//! Routing in the base: the installed modules in the shared route table of
//! [`berth_rules::routes`] (host + path prefix, most specific first), each
//! with its default version and compiled traffic rules.
//!
//! The table is immutable: every install or uninstall builds a new one and
//! swaps it in, so a request sees either the old or the new set, never half.

use std::sync::Arc;

use berth_api::Route;
use berth_runtime::LoadedModule;

pub use berth_rules::routes::{normalize, path_matches};

use crate::rules::{CompiledRules, RequestView};
use crate::stats::VersionStats;

/// The module a request goes to.
#[derive(Clone)]
pub struct Target {
    /// `name@version`, for logs and the `x-berth-module` header.
    pub label: Arc<str>,
    /// `label` as a header value, made once (`None` if it is not one).
    pub label_header: Option<http::HeaderValue>,
    /// The module to run.
    pub module: LoadedModule,
    /// Its request counters.
    pub stats: Arc<VersionStats>,
}

/// A module's compiled rules with the targets their version indices name.
#[derive(Clone)]
pub struct Rules {
    /// The rules.
    pub compiled: Arc<CompiledRules>,
    /// `targets[i]` serves `compiled.versions()[i]`.
    pub targets: Vec<Target>,
}

/// One module's place in the table.
pub struct Entry {
    name: String,
    prefix: String,
    default: Target,
    rules: Option<Rules>,
    /// Every loaded version, for a version pinned by a trusted gateway.
    versions: Vec<Target>,
}

impl Entry {
    /// The module's path prefix (`/` when it has none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The version that serves `request`: chosen by the rules, else the default.
    pub fn select(&self, request: &RequestView<'_>) -> &Target {
        self.select_pinned(request, None)
    }

    /// The version that serves `request`: `pinned` (a version a trusted
    /// gateway chose) when this module has it, else as [`Entry::select`].
    pub fn select_pinned(&self, request: &RequestView<'_>, pinned: Option<&str>) -> &Target {
        if let Some(target) = pinned.and_then(|pinned| {
            self.versions
                .iter()
                .find(|t| version_of(&t.label) == Some(pinned))
        }) {
            return target;
        }
        self.rules
            .as_ref()
            .and_then(|rules| rules.compiled.choose(request).map(|i| &rules.targets[i]))
            .unwrap_or(&self.default)
    }
}

/// An immutable snapshot of all routes.
#[derive(Default)]
pub struct RouteTable {
    routes: berth_rules::RouteTable<Entry>,
    /// Module name → index in `routes` (for module-to-module calls).
    by_name: std::collections::HashMap<String, usize>,
}

impl RouteTable {
    /// Builds a table from `(module name, route, default target, rules,
    /// every loaded version)` per module.
    pub fn new(
        routes: impl IntoIterator<Item = (String, Route, Target, Option<Rules>, Vec<Target>)>,
    ) -> Self {
        let routes = berth_rules::RouteTable::new(routes.into_iter().map(
            |(name, route, default, rules, versions)| {
                let entry = Entry {
                    name,
                    prefix: route.prefix().to_string(),
                    default,
                    rules,
                    versions,
                };
                (route, entry)
            },
        ));
        let by_name = routes
            .values()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Self { routes, by_name }
    }

    /// The entry of module `name` (for a call to `http://NAME.berth/`).
    pub fn by_name(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).and_then(|&i| self.routes.get(i))
    }

    /// The module entry for a request to `host` (may include a port) and `path`.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Entry> {
        self.routes.lookup(host, path)
    }
}

/// The version in a `name@version` label.
fn version_of(label: &str) -> Option<&str> {
    berth_api::ModuleRef::split(label).map(|(_, version)| version)
}
