//! The live counter: the server's `/stream` appended to a list as it arrives.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    api::CounterSettings,
    components::{ConnectionStatus, FeedList},
    live::{format_delay, page_data, post::encode, use_event_source, Feed, Flow},
};

/// Where the page keeps the counter island's settings.
const SETTINGS_DATA: &str = "counter-settings";

/// The most messages the page keeps on screen; older ones are counted.
const MAX_SHOWN: u32 = 500;

/// The counter demo page, rendered on the server; the feed is an island.
#[component]
pub fn CounterPage() -> impl IntoView {
    let settings = use_context::<CounterSettings>().unwrap_or_default();
    view! {
        <Title text="Live counter"/>
        <section class="card">
            <h1>"Live counter"</h1>
            <p class="lede">
                {format!(
                    "The server pushes {} messages, one every {}, over Server-Sent Events. \
                     The page appends each one as it arrives and closes the connection at the end.",
                    settings.count,
                    format_delay(settings.interval_ms),
                )}
            </p>
            {page_data::provide(SETTINGS_DATA, settings)}
            <CounterFeed/>
        </section>
        <section class="card card-secondary">
            <h2>"Broadcast topics"</h2>
            <p class="lede">
                "The counter is one stream for one page. Topics are shared: every page watching a "
                "topic receives each message the moment anyone sends it."
            </p>
            <ul class="topic-list topic-list-inline">
                {crate::pages::topics::SUGGESTED
                    .iter()
                    .map(|name| view! { <li><a href=format!("/topics/{name}")>{format!("#{name}")}</a></li> })
                    .collect_view()}
                <li><a href="/topics">"All topics →"</a></li>
            </ul>
        </section>
    }
}

/// Subscribes to `/stream` and shows its messages, progress and connection state.
#[island]
fn CounterFeed() -> impl IntoView {
    let settings = page_data::get::<CounterSettings>(SETTINGS_DATA).unwrap_or_default();
    let feed = RwSignal::new(Feed::new(
        (settings.count.saturating_add(1)).min(MAX_SHOWN) as usize
    ));
    let state = use_event_source(
        "/stream".to_owned(),
        |last_id| format!("/stream?lastEventId={}", encode(last_id)),
        &["new_message", "end_event"],
        settings.retry_ms,
        move |message| match message.event {
            "end_event" => {
                feed.update(|feed| {
                    feed.push_end(message.data);
                });
                Flow::Close
            }
            "new_message" => {
                feed.update(|feed| {
                    feed.push(Some(message.id), message.data);
                });
                Flow::Continue
            }
            _ => Flow::Continue,
        },
    );
    let received = move || feed.with(Feed::message_count);
    view! {
        <div class="feed-toolbar">
            <ConnectionStatus state/>
            <p class="feed-count">
                <span data-testid="received">{received}</span>
                {format!(" of {} messages", settings.count)}
            </p>
        </div>
        <progress class="feed-progress" max=settings.count value=received aria-label="Messages received"></progress>
        <FeedList feed empty="Waiting for the first message…"/>
    }
}

impl page_data::IslandData for CounterSettings {
    #[cfg(feature = "hydrate")]
    fn from_json(json: &page_data::Json) -> Option<Self> {
        Some(Self {
            count: json.get("count").u32()?,
            interval_ms: json.get("interval_ms").u32()?,
            retry_ms: json.get("retry_ms").u32()?,
        })
    }
}
