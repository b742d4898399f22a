//! The browser entry point: cargo-leptos builds this crate to WASM and the page's
//! hydration script calls [`hydrate`] once the module has loaded.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
