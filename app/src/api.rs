//! Server functions and the types they carry between server and browser.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// How the server runs `/stream`, so the page can show progress and the reconnect delay.
///
/// The server provides it as Leptos context; fields are `u32` because `usize` differs
/// between the server and WASM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSettings {
    /// How many `new_message` events one stream sends before `end_event`.
    pub count: u32,
    /// Milliseconds between two messages.
    pub interval_ms: u32,
    /// The `retry:` delay the stream asks browsers to wait before reconnecting.
    pub retry_ms: u32,
}

/// Reads the counter stream's settings from the server's context.
#[server(endpoint = "counter_settings")]
pub async fn get_counter_settings() -> Result<CounterSettings, ServerFnError> {
    use_context::<CounterSettings>()
        .ok_or_else(|| ServerFnError::new("the server did not provide its counter settings"))
}

/// Makes the server answer the page being rendered with `404 Not Found`.
#[cfg(feature = "ssr")]
pub fn set_not_found_status() {
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(http::StatusCode::NOT_FOUND);
    }
}

/// In the browser the status was already sent with the page: nothing to do.
#[cfg(not(feature = "ssr"))]
pub fn set_not_found_status() {}
