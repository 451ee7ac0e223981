//! Capabilities: what a base shares with its modules, as plug-ins.
//!
//! A capability owns one host interface (or a few): `berth:base/config`,
//! `berth:base/kv` and `berth:base/log` are built in, and a base team adds
//! its own — a SQL pool, a message bus client — by implementing the same
//! [`Capability`] trait and listing it in
//! [`RuntimeConfig::capabilities`](crate::RuntimeConfig::capabilities). A
//! capability with the name of a built-in one replaces it (a kv backed by
//! the team's own store, say).
//!
//! Three phases, from the longest-lived to the shortest:
//!
//! 1. **init**, once per engine: add the interfaces to the linker. A module
//!    that imports an interface no capability added is refused at install,
//!    naming the interface.
//! 2. **configure**, once per module version at install: check what the
//!    module was granted and build what every request of that version shares
//!    (its config map, its kv namespace). A refusal fails the install with
//!    the capability's message, and nothing changes.
//! 3. **prepare**, once per request: the per-instance data the interface's
//!    calls use, put into the instance's store data, where the host
//!    functions find it with [`HostState::capability`].
//!
//! Why phases: the costly and fallible work happens once, at install, where
//! an error can still refuse the module; the request path only clones
//! what was configured. Why one trait for built-ins and plug-ins alike: the
//! base's own interfaces prove the trait is enough, and a base team's
//! capability is as isolated as the built-ins — scoped by the module's
//! settings, never by what the guest passes.

use std::any::{Any, TypeId};
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::error::LoadError;
use crate::extensions::Extensions;
use crate::host::HostState;
use crate::logs::LogSink;
use crate::settings::ModuleSettings;

/// A host interface a base shares with its modules; see the module docs.
pub trait Capability: Send + Sync + 'static {
    /// What one module version shares across its requests.
    type Module: Send + Sync + 'static;
    /// What one request's instance uses; found by the host functions with
    /// [`HostState::capability`].
    type Instance: Send + 'static;

    /// A stable name, e.g. `berth:base/kv` (a later capability with the same
    /// name replaces an earlier one).
    fn name(&self) -> &str;

    /// The WIT interfaces [`init`](Capability::init) adds, with their
    /// versions (`berth:sql/query@0.1.0`): what the base reports it offers,
    /// and what the controller matches against a module's imports.
    /// By default the capability's [`name`](Capability::name) alone, which
    /// the controller takes as every version of that interface.
    fn interfaces(&self) -> Vec<String> {
        vec![self.name().to_owned()]
    }

    /// Adds the interfaces to `linker` (once per engine).
    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// Builds the per-version state of `module`, or refuses it (the error
    /// says what to change; the install fails with it, naming the
    /// capability).
    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Self::Module>;

    /// Builds one instance's data from the version's state.
    fn prepare(&self, module: &Self::Module, instance: &InstanceContext<'_>) -> Self::Instance;
}

/// What [`Capability::prepare`] knows of the instance being made.
pub struct InstanceContext<'a> {
    /// The module version's settings.
    pub settings: &'a ModuleSettings,
    /// The request's id, if it has one.
    pub request_id: Option<&'a str>,
    /// Where the module's log lines go, if they are captured.
    pub log_sink: Option<&'a Arc<dyn LogSink>>,
}

/// A [`Capability`] with its types erased, as the runtime holds it.
pub trait AnyCapability: Send + Sync + 'static {
    /// [`Capability::name`].
    fn name(&self) -> &str;
    /// [`Capability::interfaces`].
    fn interfaces(&self) -> Vec<String>;
    /// [`Capability::init`].
    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    /// [`Capability::configure`], boxed.
    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Arc<dyn Any + Send + Sync>>;
    /// [`Capability::prepare`], boxed with the type it is looked up by.
    fn prepare(
        &self,
        module: &(dyn Any + Send + Sync),
        instance: &InstanceContext<'_>,
    ) -> (TypeId, Box<dyn Any + Send>);
}

impl<C: Capability> AnyCapability for C {
    fn name(&self) -> &str {
        Capability::name(self)
    }

    fn interfaces(&self) -> Vec<String> {
        Capability::interfaces(self)
    }

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Capability::init(self, linker)
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Arc<dyn Any + Send + Sync>> {
        Ok(Arc::new(Capability::configure(self, module)?))
    }

    fn prepare(
        &self,
        module: &(dyn Any + Send + Sync),
        instance: &InstanceContext<'_>,
    ) -> (TypeId, Box<dyn Any + Send>) {
        let module = module
            .downcast_ref::<C::Module>()
            .expect("prepare gets what configure of the same capability made");
        (
            TypeId::of::<C::Instance>(),
            Box::new(Capability::prepare(self, module, instance)),
        )
    }
}

/// The capabilities of a runtime, in order; cheap to clone.
#[derive(Clone, Default)]
pub struct Capabilities(Vec<Arc<dyn AnyCapability>>);

impl Capabilities {
    /// No capabilities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `capability`, replacing one of the same name.
    pub fn with(mut self, capability: impl Capability) -> Self {
        self.add(Arc::new(capability));
        self
    }

    /// Adds `capability`, replacing one of the same name.
    pub fn add(&mut self, capability: Arc<dyn AnyCapability>) {
        match self.0.iter_mut().find(|c| c.name() == capability.name()) {
            Some(slot) => *slot = capability,
            None => self.0.push(capability),
        }
    }

    /// `self`, then `more` (replacing by name).
    pub(crate) fn extended_by(mut self, more: &Capabilities) -> Self {
        for c in &more.0 {
            self.add(c.clone());
        }
        self
    }

    /// Each capability, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn AnyCapability>> {
        self.0.iter()
    }

    /// Every WIT interface the capabilities offer (with versions), sorted.
    pub fn interfaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self.0.iter().flat_map(|c| c.interfaces()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Runs every capability's configure for `module`; the first refusal,
    /// named after its capability.
    pub(crate) fn configure(&self, module: &ModuleSettings) -> Result<Configured, LoadError> {
        self.0
            .iter()
            .map(|c| {
                c.configure(module)
                    .map(|state| (c.clone(), state))
                    .map_err(|e| LoadError::Refused {
                        capability: c.name().to_owned(),
                        reason: format!("{e:#}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|states| Configured(Arc::new(states)))
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| c.name()))
            .finish()
    }
}

/// One capability with the state it configured for a module version.
type ConfiguredOne = (Arc<dyn AnyCapability>, Arc<dyn Any + Send + Sync>);

/// Every capability's state for one module version.
#[derive(Clone, Default)]
pub(crate) struct Configured(Arc<Vec<ConfiguredOne>>);

impl Configured {
    /// One instance's data of every capability.
    pub(crate) fn prepare(&self, instance: &InstanceContext<'_>) -> Extensions {
        let mut extensions = Extensions::default();
        for (c, state) in self.0.iter() {
            let (id, data) = c.prepare(state.as_ref(), instance);
            extensions.push(id, data);
        }
        extensions
    }
}
