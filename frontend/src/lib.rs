//! The browser entry point: cargo-leptos builds this crate to WASM and the page's
//! hydration script calls [`hydrate`] once the module has loaded. Only the islands of the
//! page (see the `app` crate) hydrate; the rest stays as the server rendered it.

// Links the app's islands into this module.
#[allow(unused_imports)]
use app::*;

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
