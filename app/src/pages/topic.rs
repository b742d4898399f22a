//! A topic page: its recent messages rendered on the server, then live updates from the hub.
//!
//! The page subscribes from the cursor the server read with the snapshot, so a message
//! published while the page loads arrives exactly once: if it was in the snapshot, the
//! hub does not send it again; if not, the hub replays it.

use leptos::{html, prelude::*, server_fn::ServerFn};
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::{
    api::{topic_iri, topic_snapshot, SetMembership, TopicSnapshot, TOPIC_PAGE_MESSAGES},
    components::{Composer, ConnectionStatus, FeedList},
    live::{
        page_data,
        post::{encode, fetch_watchers, request_token},
        time::{now_millis, uuid_v7_millis},
        use_event_source, ConnectionState, Feed, Flow, NewItem, Watchers, OPENED,
    },
};

/// The hub's health notices.
const HEALTH_TOPIC: &str = "/.well-known/mercure/health";

/// The reconnect delay the hub leaves to the browser (Chrome waits about 3 s).
const BROWSER_RETRY_MS: u32 = 3000;

/// `/topics/{name}`, rendered on the server; the room is an island.
#[component]
pub fn TopicPage() -> impl IntoView {
    let params = use_params_map();
    let name = params.read_untracked().get("name").unwrap_or_default();
    match topic_snapshot(name) {
        Ok(snapshot) => view! {
            <Title text=format!("#{}", snapshot.topic)/>
            {page_data::provide(SNAPSHOT_DATA, snapshot)}
            <TopicRoom/>
        }
        .into_any(),
        Err(error) => {
            crate::api::set_not_found_status();
            view! {
                <Title text="Topic not found"/>
                <section class="card">
                    <h1>"Topic not available"</h1>
                    <p class="error" role="alert">{error.to_string()}</p>
                    <p><a href="/topics">"See all topics"</a></p>
                </section>
            }
            .into_any()
        }
    }
}

/// Where the page keeps the room island's snapshot.
const SNAPSHOT_DATA: &str = "topic-snapshot";

/// The fields of the hub's own events (`event: mercure`) the page reads: subscription
/// events (`subscriber`, `active`) and health notices (`type: health`, `state`).
struct HubEvent {
    kind: String,
    subscriber: String,
    active: bool,
    state: String,
}

impl HubEvent {
    /// Reads an event's JSON data; `None` if it is not a JSON object with a `type`.
    #[cfg(feature = "hydrate")]
    fn parse(data: &str) -> Option<Self> {
        let json = page_data::Json::parse(data)?;
        Some(Self {
            kind: json.get("type").str()?,
            subscriber: json.get("subscriber").str().unwrap_or_default(),
            active: json.get("active").bool().unwrap_or_default(),
            state: json.get("state").str().unwrap_or_default(),
        })
    }

    /// Off the browser no events arrive.
    #[cfg(not(feature = "hydrate"))]
    fn parse(_: &str) -> Option<Self> {
        None
    }
}

impl page_data::IslandData for TopicSnapshot {
    #[cfg(feature = "hydrate")]
    fn from_json(json: &page_data::Json) -> Option<Self> {
        let messages = json
            .get("messages")
            .items()
            .iter()
            .map(|message| {
                Some(crate::api::TopicMessage {
                    id: message.get("id").str()?,
                    text: message.get("text").str()?,
                    time_ms: message.get("time_ms").u64()?,
                    members_only: message.get("members_only").bool()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let watchers = json
            .get("watchers")
            .items()
            .iter()
            .map(page_data::Json::str)
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            topic: json.get("topic").str()?,
            messages,
            older: json.get("older").u32()?,
            watchers,
            cursor: json.get("cursor").str()?,
            member: json.get("member").bool()?,
        })
    }
}

/// The live part of a topic page: the feed, watchers, membership and composer.
#[island]
fn TopicRoom() -> impl IntoView {
    let TopicSnapshot {
        topic,
        messages,
        older,
        watchers,
        cursor,
        member,
    } = page_data::get::<TopicSnapshot>(SNAPSHOT_DATA).unwrap_or_default();
    let mut initial = Feed::new(TOPIC_PAGE_MESSAGES);
    initial.count_evicted(u64::from(older));
    for message in messages {
        initial.push_item(NewItem {
            id: Some(message.id),
            text: message.text,
            time_ms: Some(message.time_ms),
            members_only: message.members_only,
        });
    }
    let feed = RwSignal::new(initial);
    let watchers = RwSignal::new(Watchers::new(watchers));
    let degraded = RwSignal::new(false);
    let url = subscription_url(&topic, &cursor);
    let resume_topic = topic.clone();
    let watchers_topic = topic.clone();
    let token_topic = topic.clone();
    let reopened = std::cell::Cell::new(false);
    let state = use_event_source(
        url,
        move |last_id| subscription_url(&resume_topic, last_id),
        &["message", "members", "mercure"],
        BROWSER_RETRY_MS,
        move |event| {
            if event.event == OPENED {
                // Health notices are sent live and never stored: a hub that recovered while
                // the page was disconnected would leave the warning up for good. Each new
                // connection starts healthy; a hub still degraded says so right after.
                degraded.set(false);
                // Watchers who left while the page was away are only known to have left if
                // the hub saw them go (a restarted one did not): ask who is there now.
                if reopened.replace(true) {
                    let question = watchers.try_update(Watchers::ask).unwrap_or_default();
                    let topic = watchers_topic.clone();
                    leptos::task::spawn_local(async move {
                        let ids = fetch_watchers(&topic).await;
                        watchers.update(|set| set.answered(question, ids));
                    });
                }
            } else if event.event == "mercure" {
                match HubEvent::parse(&event.data) {
                    Some(health) if health.kind == "health" => {
                        degraded.set(health.state == "degraded")
                    }
                    Some(presence) => watchers.update(|set| {
                        set.seen(presence.subscriber, presence.active);
                    }),
                    None => {}
                }
            } else {
                let time_ms = uuid_v7_millis(&event.id).unwrap_or_else(now_millis);
                feed.update(|feed| {
                    feed.push_item(NewItem {
                        id: Some(event.id),
                        text: event.data,
                        time_ms: Some(time_ms),
                        members_only: event.event == "members",
                    });
                });
            }
            Flow::Continue
        },
    );

    // The hub token is the page's cookie, sent with each connection. When the hub refuses
    // a connection (the page opens another later), the token may be what it refused: it
    // ran out (the hub also ends a stream then), or a server restarted without a fixed
    // subscriber key signs with a new key. So the page asks for a new one meanwhile.
    Effect::new(move |_| {
        if matches!(state.get(), ConnectionState::Failed { .. }) {
            let topic = token_topic.clone();
            leptos::task::spawn_local(async move {
                let _ = request_token(&topic, member).await;
            });
        }
    });

    let state = Signal::derive(move || match state.get() {
        ConnectionState::Live if degraded.get() => ConnectionState::Degraded,
        other => other,
    });
    let scroller = NodeRef::<html::Div>::new();
    let pinned = RwSignal::new(true);
    let unseen = RwSignal::new(0u32);
    let scroll_to_end = move || {
        if let Some(element) = scroller.get_untracked() {
            element.set_scroll_top(element.scroll_height());
        }
    };
    Effect::new(move |previous: Option<u64>| {
        let count = feed.with(Feed::message_count);
        if pinned.get_untracked() {
            scroll_to_end();
        } else if let Some(previous) = previous.filter(|previous| count > *previous) {
            let arrived = u32::try_from(count - previous).unwrap_or(u32::MAX);
            unseen.update(|n| *n = n.saturating_add(arrived));
        }
        count
    });
    // A reader who scrolls up is not pulled to new messages, and the feed holds the rows
    // being read (nothing is evicted from under them) until they are back at the end.
    let set_pinned = move |at_end: bool| {
        if at_end && unseen.get_untracked() > 0 {
            unseen.set(0);
        }
        if pinned.get_untracked() != at_end {
            pinned.set(at_end);
            feed.update(|feed| feed.hold(!at_end));
        }
    };
    let on_scroll = move |_| {
        if let Some(element) = scroller.get_untracked() {
            set_pinned(
                element.scroll_height() - element.scroll_top() - element.client_height() < 48,
            );
        }
    };
    let watching = move || match watchers.with(Watchers::len) {
        1 => "1 watching".to_owned(),
        n => format!("{n} watching"),
    };
    let (membership_note, membership_action) = if member {
        (
            "You are a member: members-only messages are shown.",
            "Leave",
        )
    } else {
        ("Members-only messages are hidden.", "Join as a member")
    };
    view! {
        <section class="card topic">
            <header class="topic-head">
                <div>
                    <p class="eyebrow">"Topic"</p>
                    <h1>{format!("#{topic}")}</h1>
                </div>
                <div class="topic-meta">
                    <ConnectionStatus state/>
                    <span class="watchers" data-testid="watchers">{watching}</span>
                </div>
            </header>
            // A plain form: the server sets the new token and sends the browser back here,
            // which reloads the page with it (what the hub sends depends on the token).
            <form class="membership" method="post" action=SetMembership::PATH data-testid="membership">
                <input type="hidden" name="topic" value=topic.clone()/>
                <input type="hidden" name="member" value=if member { "false" } else { "true" }/>
                <span>{membership_note}</span>
                <button class="link-button" type="submit">{membership_action}</button>
            </form>
            {move || degraded.get().then(|| view! {
                <p class="banner-warn" data-testid="degraded">
                    "The hub cannot store messages right now: what you send meanwhile is "
                    "refused (nothing is half-sent), and delivery resumes by itself when it "
                    "recovers."
                </p>
            })}
            <div
                class="feed-scroll"
                node_ref=scroller
                on:scroll=on_scroll
                tabindex="0"
                role="region"
                aria-label="Messages"
                data-testid="feed-scroll"
            >
                <FeedList feed empty="No messages yet. Say something!"/>
            </div>
            {move || (unseen.get() > 0).then(|| view! {
                <button class="jump" on:click=move |_| {
                    set_pinned(true);
                    scroll_to_end();
                    // The button goes away with the click: keep the keyboard in the feed.
                    if let Some(element) = scroller.get_untracked() {
                        let _ = element.focus();
                    }
                }>
                    {move || format!("{} new ↓", unseen.get())}
                </button>
            })}
            <Composer topic=topic.clone() member=Signal::stored(member)/>
        </section>
    }
}

/// The hub URL a topic page subscribes to: the topic's messages and its subscription
/// events, from `cursor`.
pub fn subscription_url(topic: &str, cursor: &str) -> String {
    let iri = topic_iri(topic);
    let presence = format!(
        "/.well-known/mercure/subscriptions/exact/{}/:subscriber",
        encode(&iri)
    );
    format!(
        "/.well-known/mercure?match={}&match={}&match_urlpattern={}&last_event_id={}",
        encode(&iri),
        encode(HEALTH_TOPIC),
        encode(&presence),
        encode(cursor)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribes_to_messages_and_presence_from_the_cursor() {
        assert_eq!(
            subscription_url("general", "urn:uuid:1"),
            "/.well-known/mercure?match=%2Ftopics%2Fgeneral\
             &match=%2F.well-known%2Fmercure%2Fhealth\
             &match_urlpattern=%2F.well-known%2Fmercure%2Fsubscriptions%2Fexact%2F%252Ftopics%252Fgeneral%2F%3Asubscriber\
             &last_event_id=urn%3Auuid%3A1"
        );
    }
}
