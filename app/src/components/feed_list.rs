//! A live list of received events.

use leptos::prelude::*;

use crate::live::{Feed, FeedItem};

/// Renders a [`Feed`] as an ordered list, newest last; items are plain text, never HTML.
#[component]
pub fn FeedList(
    feed: RwSignal<Feed>,
    /// Shown while the feed is empty.
    #[prop(into)]
    empty: String,
) -> impl IntoView {
    let items = move || feed.with(|feed| feed.items().cloned().collect::<Vec<_>>());
    let evicted = move || feed.with(Feed::evicted);
    let is_empty = move || feed.with(|feed| feed.items().next().is_none());
    view! {
        <Show when=move || { evicted() > 0 }>
            <p class="feed-evicted">{move || format!("{} older messages not shown", evicted())}</p>
        </Show>
        <ol class="feed" aria-label="Messages" data-testid="feed">
            <For each=items key=|item| item.seq children=feed_item/>
        </ol>
        <Show when=is_empty>
            <p class="feed-empty">{empty.clone()}</p>
        </Show>
    }
}

fn feed_item(item: FeedItem) -> impl IntoView {
    let class = if item.is_end {
        "feed-item feed-end"
    } else {
        "feed-item"
    };
    view! {
        <li class=class>
            {item.id.map(|id| view! { <span class="feed-id">{format!("#{id}")}</span> })}
            <span class="feed-text">{item.text}</span>
        </li>
    }
}
