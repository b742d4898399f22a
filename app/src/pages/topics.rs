//! `/topics`: the topics with recent activity, and a way to open any topic.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::{components::Redirect, hooks::use_query_map};

use crate::api::{active_topics, check_topic_name};

/// Topics every visitor is offered.
pub const SUGGESTED: [&str; 3] = ["general", "random", "announcements"];

/// The list of topics.
#[component]
pub fn TopicsPage() -> impl IntoView {
    let query = use_query_map();
    // Names are case-sensitive, as in `/topics/{name}` links: the form opens what was typed.
    let requested = move || query.read().get("open").map(|name| name.trim().to_owned());
    let open = move || requested().filter(|name| check_topic_name(name).is_ok());
    let refused = move || {
        requested()
            .and_then(|name| check_topic_name(&name).err())
            .map(|error| error.to_string())
    };
    let topics = active_topics();
    view! {
        <Title text="Topics"/>
        {move || open().map(|name| view! { <Redirect path=format!("/topics/{name}")/> })}
        <section class="card">
            <h1>"Topics"</h1>
            <p class="lede">
                "A topic is a channel: every page watching it receives each message the moment "
                "it is sent. Open one, or make a new one by giving it a name."
            </p>
            <OpenTopic/>
            {move || refused().map(|error| view! {
                <p class="form-error" role="alert" data-testid="open-topic-error">{error}</p>
            })}
            <h2>"Suggested"</h2>
            <ul class="topic-list">
                {SUGGESTED
                    .iter()
                    .map(|name| view! { <li><a href=format!("/topics/{name}")>{format!("#{name}")}</a></li> })
                    .collect_view()}
            </ul>
            <h2>"Active now"</h2>
            {match topics {
                Ok(list) if list.is_empty() => {
                    view! { <p class="feed-empty">"No activity yet."</p> }.into_any()
                }
                Ok(list) => {
                    view! {
                        <ul class="topic-list" data-testid="active-topics">
                            {list
                                .into_iter()
                                .map(|topic| {
                                    view! {
                                        <li>
                                            <a href=format!("/topics/{}", topic.name)>{format!("#{}", topic.name)}</a>
                                            <span class="topic-stats">
                                                {format!("{} messages · {} watching", topic.messages, topic.watchers)}
                                            </span>
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ul>
                    }
                        .into_any()
                }
                Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
            }}
        </section>
    }
}

/// A form that opens the topic named in it (a plain GET form, so it works before WASM).
#[component]
pub fn OpenTopic() -> impl IntoView {
    view! {
        <form class="open-topic" method="get" action="/topics">
            <label for="open-topic">"Topic name"</label>
            <div class="open-topic-row">
                <input id="open-topic" name="open" placeholder="e.g. rust" pattern="[A-Za-z0-9._\\-]{1,64}" required/>
                <button type="submit" class="button">"Open"</button>
            </div>
        </form>
    }
}
