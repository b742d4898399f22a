//! The form that sends a message to a topic.

use leptos::{html, prelude::*};

use crate::api::{PostMessage, MAX_MESSAGE_CHARS};

/// Sends a message through the `post_message` server function; errors show in the form.
/// Without WebAssembly it still works as a plain form post.
#[component]
pub fn Composer(
    /// The topic's name.
    topic: String,
    /// Whether the reader may send members-only messages.
    #[prop(into)]
    member: Signal<bool>,
) -> impl IntoView {
    let action = ServerAction::<PostMessage>::new();
    let form = NodeRef::<html::Form>::new();
    let length = RwSignal::new(0usize);
    Effect::new(move |_| {
        if let Some(Ok(_)) = action.value().get() {
            if let Some(form) = form.get() {
                form.reset();
                length.set(0);
            }
        }
    });
    let error = move || {
        action
            .value()
            .get()
            .and_then(Result::err)
            .map(|error| error.to_string())
    };
    let pending = action.pending();
    view! {
        <ActionForm action node_ref=form attr:class="composer" attr:aria-label="Send a message">
            <input type="hidden" name="topic" value=topic/>
            <label for="composer-text" class="visually-hidden">"Message"</label>
            <textarea
                id="composer-text"
                name="text"
                rows="2"
                maxlength=MAX_MESSAGE_CHARS
                placeholder="Write a message…"
                required
                on:input=move |event| length.set(event_target_value(&event).chars().count())
            ></textarea>
            <div class="composer-row">
                <label class="check" class:disabled=move || !member.get()>
                    <input type="checkbox" name="members_only" value="on" disabled=move || !member.get()/>
                    " Members only"
                </label>
                <span class="composer-count" aria-live="off">
                    {move || format!("{} / {MAX_MESSAGE_CHARS}", length.get())}
                </span>
                <button type="submit" class="button" disabled=pending>
                    {move || if pending.get() { "Sending…" } else { "Send" }}
                </button>
            </div>
            <Show when=move || error().is_some()>
                <p class="form-error" role="alert" data-testid="composer-error">{error}</p>
            </Show>
        </ActionForm>
    }
}
