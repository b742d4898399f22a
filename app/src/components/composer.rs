//! The form that sends a message to a topic.

use leptos::{ev::SubmitEvent, html, prelude::*, server_fn::ServerFn, task::spawn_local};

use crate::{
    api::{PostMessage, MAX_MESSAGE_CHARS},
    live::post::post_form,
};

/// Sends a message to the `post_message` server function; errors show in the form. Without
/// WebAssembly it is a plain form post to the same function.
#[component]
pub fn Composer(
    /// The topic's name.
    topic: String,
    /// Whether the reader may send members-only messages.
    #[prop(into)]
    member: Signal<bool>,
) -> impl IntoView {
    let form = NodeRef::<html::Form>::new();
    let length = RwSignal::new(0usize);
    let pending = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let on_submit = move |event: SubmitEvent| {
        event.prevent_default();
        let Some(form) = form.get_untracked() else {
            return;
        };
        if pending.get_untracked() {
            return;
        }
        pending.set(true);
        spawn_local(async move {
            match post_form(&form).await {
                Ok(_) => {
                    form.reset();
                    length.set(0);
                    error.set(None);
                }
                Err(failure) => error.set(Some(failure.to_string())),
            }
            pending.set(false);
        });
    };
    view! {
        <form
            method="post"
            action=PostMessage::PATH
            class="composer"
            aria-label="Send a message"
            node_ref=form
            on:submit=on_submit
        >
            <input type="hidden" name="topic" value=topic/>
            <label for="composer-text" class="visually-hidden">"Message"</label>
            <textarea
                id="composer-text"
                name="text"
                rows="2"
                maxlength=MAX_MESSAGE_CHARS
                placeholder="Write a message…"
                required
                // Nothing typed while sending is lost to the reset that follows.
                readonly=move || pending.get()
                // Counted as the browser's `maxlength` counts (UTF-16 units), which is never
                // more than the server's limit in characters.
                on:input=move |event| length.set(event_target_value(&event).encode_utf16().count())
            ></textarea>
            <div class="composer-row">
                <label class="check" class:disabled=move || !member.get()>
                    <input type="checkbox" name="members_only" value="on" disabled=move || !member.get()/>
                    " Members only"
                </label>
                <span class="composer-count" aria-live="off">
                    {move || format!("{} / {MAX_MESSAGE_CHARS}", length.get())}
                </span>
                <button type="submit" class="button" disabled=move || pending.get()>
                    {move || if pending.get() { "Sending…" } else { "Send" }}
                </button>
            </div>
            {move || error.get().map(|error| view! { <p class="form-error" role="alert" data-testid="composer-error">{error}</p> })}
        </form>
    }
}
