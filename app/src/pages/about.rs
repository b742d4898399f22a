//! What Pulse is and how its stream works.

use leptos::prelude::*;
use leptos_meta::Title;

/// A short explanation of the demo and its endpoints.
#[component]
pub fn AboutPage() -> impl IntoView {
    view! {
        <Title text="About"/>
        <section class="card prose">
            <h1>"About Pulse"</h1>
            <p class="lede">
                "Pulse pushes live data from a Rust server to your browser with Server-Sent Events. "
                "The page is rendered on the server, then hydrated by WebAssembly built from the same Rust code."
            </p>
            <h2>"The counter stream"</h2>
            <p>
                <code>"GET /stream"</code>
                " answers with " <code>"text/event-stream"</code> ". Each connection gets its own counter: "
                "events named " <code>"new_message"</code> " carry " <code>"Counter value 1"</code> " to "
                <code>"Counter value 20"</code> ", each with an " <code>"id"</code> " and a "
                <code>"retry"</code> " delay, then one " <code>"end_event"</code>
                " says the stream is over and the page closes its connection."
            </p>
            <pre class="wire">
                "event: new_message\nid: 1\nretry: 15000\ndata: Counter value 1\n\n"
            </pre>
            <h2>"Endpoints"</h2>
            <ul>
                <li><a href="/">"/"</a> " — the live counter page"</li>
                <li><code>"/stream"</code> " — the counter's event stream"</li>
                <li><a href="/metrics" rel="external">"/metrics"</a> " — Prometheus metrics"</li>
            </ul>
        </section>
    }
}
