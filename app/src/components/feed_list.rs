//! A live list of received events.

use leptos::prelude::*;

use crate::live::{
    time::{clock, iso, local_offset_minutes},
    Feed, FeedItem,
};

/// Renders a [`Feed`] as an ordered list, newest last; items are plain text, never HTML.
///
/// Times render in UTC on the server and while hydrating (so both agree), then switch to
/// the reader's time zone.
#[component]
pub fn FeedList(
    feed: RwSignal<Feed>,
    /// Shown while the feed is empty.
    #[prop(into)]
    empty: String,
) -> impl IntoView {
    let offset = RwSignal::new(0);
    Effect::new(move |_| offset.set(local_offset_minutes()));
    let items = move || feed.with(|feed| feed.items().cloned().collect::<Vec<_>>());
    let evicted = move || feed.with(Feed::evicted);
    let is_empty = move || feed.with(|feed| feed.items().next().is_none());
    view! {
        <Show when=move || { evicted() > 0 }>
            <p class="feed-evicted" data-testid="evicted">
                {move || match evicted() {
                    1 => "1 older message not shown".to_owned(),
                    n => format!("{n} older messages not shown"),
                }}
            </p>
        </Show>
        <ol class="feed" aria-label="Messages" data-testid="feed">
            <For each=items key=|item| item.seq children=move |item| feed_item(item, offset)/>
        </ol>
        <Show when=is_empty>
            <p class="feed-empty">{empty.clone()}</p>
        </Show>
    }
}

fn feed_item(item: FeedItem, offset: RwSignal<i32>) -> impl IntoView {
    let class = match (item.is_end, item.members_only) {
        (true, _) => "feed-item feed-end",
        (false, true) => "feed-item feed-private",
        (false, false) => "feed-item",
    };
    let time = item.time_ms.map(|ms| {
        view! {
            <time class="feed-time" datetime=iso(ms)>
                {move || clock(ms, offset.get())}
            </time>
        }
    });
    let id = match (&item.time_ms, item.id) {
        (None, Some(id)) => Some(view! { <span class="feed-id">{format!("#{id}")}</span> }),
        _ => None,
    };
    view! {
        <li class=class>
            {time}
            {id}
            <span class="feed-text">{item.text}</span>
            {item.members_only.then(|| view! { <span class="badge-private" title="Only members see this">"members"</span> })}
        </li>
    }
}
