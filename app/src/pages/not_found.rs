//! The page for unknown paths.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::set_not_found_status;

/// Shown for any path no route matches; the server answers it with 404.
#[component]
pub fn NotFound() -> impl IntoView {
    set_not_found_status();
    view! {
        <Title text="Not found"/>
        <section class="card">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <a href="/">"Go to the live counter"</a> "."</p>
        </section>
    }
}
