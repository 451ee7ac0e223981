//! One instance's capability data, looked up by type.
//!
//! [`crate::capability`] fills it (each capability's *prepare*) and
//! [`crate::HostState`] holds it, so neither needs the other's internals.

use std::any::{Any, TypeId};

/// Each capability's per-instance data, keyed by its type.
#[derive(Default)]
pub(crate) struct Extensions(Vec<(TypeId, Box<dyn Any + Send>)>);

impl Extensions {
    /// Adds one capability's data (`id` is the type of what `data` boxes).
    pub(crate) fn push(&mut self, id: TypeId, data: Box<dyn Any + Send>) {
        self.0.push((id, data));
    }

    /// The data of type `T`, if a capability prepared one.
    pub(crate) fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.0
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, data)| data.downcast_mut())
    }
}
