//! The guest's exports every host call needs, found once per instance.

use wasmtime::{AsContextMut, Instance, Memory, TypedFunc};

/// The exports every host call needs: the guest's memory and its allocator.
#[derive(Clone)]
pub(crate) struct Guest {
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
}

impl Guest {
    pub(crate) fn of(instance: &Instance, mut store: impl AsContextMut) -> Option<Guest> {
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .ok();
        Some(Guest { memory, alloc })
    }

    pub(crate) fn memory(&self) -> Option<Memory> {
        self.memory
    }
}
