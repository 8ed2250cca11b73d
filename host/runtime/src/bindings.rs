//! Rust bindings of the `ionflow:gateway/connector` world, generated from `wit/`.

wasmtime::component::bindgen!({
    world: "connector",
    path: "../../wit",
    imports: { default: async },
    exports: { default: async },
});
