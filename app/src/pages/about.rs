//! What Pulse is and how its streams work.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{api::CounterSettings, live::format_delay};

/// A short explanation of the demo and its endpoints, with the counter as this server runs
/// it (its flags can change the count, the interval and the `retry:`).
#[component]
pub fn AboutPage() -> impl IntoView {
    let settings = use_context::<CounterSettings>().unwrap_or_default();
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
                <code>{format!("Counter value {}", settings.count)}</code>
                {format!(", one every {}, each with an ", format_delay(settings.interval_ms))}
                <code>"id"</code> " and a " <code>"retry"</code>
                " delay, then one " <code>"end_event"</code>
                " says the stream is over and the page closes its connection. "
                "A client that reconnects with " <code>"Last-Event-ID"</code>
                " carries on after that message."
            </p>
            <pre class="wire">{wire_example(&settings)}</pre>
            <h2>"Broadcast topics"</h2>
            <p>
                "Topics are shared streams served by a "
                <a href="https://mercure.rocks/spec" rel="external">"Mercure"</a>
                " hub: every page watching a topic gets each message as soon as anyone sends it, "
                "and a page that reconnects gets what it missed."
            </p>
            <h2>"Endpoints"</h2>
            <ul>
                <li><a href="/">"/"</a> " — the live counter page"</li>
                <li><a href="/topics">"/topics"</a> " — broadcast topics and who is watching them"</li>
                <li><code>"/stream"</code> " — the counter's event stream"</li>
                <li>
                    <code>"/.well-known/mercure"</code>
                    " — the hub: subscribe with " <code>"GET"</code> ", publish with "
                    <code>"POST"</code>
                </li>
                <li><a href="/metrics" rel="external">"/metrics"</a> " — Prometheus metrics"</li>
            </ul>
        </section>
    }
}

/// The counter's first event as it goes over the wire.
fn wire_example(settings: &CounterSettings) -> String {
    format!(
        "event: new_message\nid: 1\nretry: {}\ndata: Counter value 1\n\n",
        settings.retry_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_example_shows_the_configured_retry() {
        assert_eq!(
            wire_example(&CounterSettings::default()),
            "event: new_message\nid: 1\nretry: 15000\ndata: Counter value 1\n\n"
        );
        let settings = CounterSettings {
            retry_ms: 2_500,
            ..CounterSettings::default()
        };
        assert!(wire_example(&settings).contains("\nretry: 2500\n"));
    }
}
