//! A live list of received events.

use leptos::prelude::*;

use crate::live::{
    time::{clock, iso, local_offset_minutes},
    Feed, FeedItem,
};

/// Renders a [`Feed`] as an ordered list, newest last; items are plain text, never HTML.
///
/// Times render in UTC on the server and while hydrating (so both agree), then switch to
/// the reader's time zone (the list renders again once, when the zone is known).
///
/// Rows are matched to items by position, not by key: a keyed `<For>` would add ~5 KB
/// (gzipped) of diffing and hash maps to the WASM. Rows hold plain text (no reactive parts
/// of their own), so rendering again only updates the text that changed. While the feed
/// grows that only appends rows; once it is full each new item shifts the rows' contents up
/// by one, which a reader at the end sees as the list scrolling. A reader scrolled up is
/// not disturbed because the feed is then held (see [`Feed::hold`], up to four times its
/// cap). Rows carry the parity of their item's sequence number (`alt`), so the style sheet
/// replays the newest row's arrival even when the row is reused.
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
        {move || match evicted() {
            0 => None,
            1 => Some("1 older message not shown".to_owned()),
            n => Some(format!("{n} older messages not shown")),
        }.map(|note| view! { <p class="feed-evicted" data-testid="evicted">{note}</p> })}
        <ol class="feed" aria-label="Messages" data-testid="feed">
            {move || {
                let offset = offset.get();
                items().into_iter().map(|item| feed_item(item, offset)).collect_view()
            }}
        </ol>
        {move || is_empty().then(|| view! { <p class="feed-empty">{empty.clone()}</p> })}
    }
}

fn feed_item(item: FeedItem, offset: i32) -> impl IntoView {
    let class = match (item.is_end, item.members_only) {
        (true, _) => "feed-item feed-end",
        (false, true) => "feed-item feed-private",
        (false, false) => "feed-item",
    };
    let time = item.time_ms.map(|ms| {
        view! {
            <time class="feed-time" datetime=iso(ms)>{clock(ms, offset)}</time>
        }
    });
    let id = match (&item.time_ms, item.id) {
        (None, Some(id)) => Some(view! { <span class="feed-id">{format!("#{id}")}</span> }),
        _ => None,
    };
    view! {
        <li class=class class:alt=item.seq % 2 == 1>
            {time}
            {id}
            <span class="feed-text">{item.text}</span>
            {item.members_only.then(|| view! { <span class="badge-private" title="Only members see this">"members"</span> })}
        </li>
    }
}
