//! The connection's state, for eyes and for screen readers.

use leptos::prelude::*;

use crate::live::ConnectionState;

/// A badge with the connection's state; changes are announced politely to screen readers.
#[component]
pub fn ConnectionStatus(#[prop(into)] state: Signal<ConnectionState>) -> impl IntoView {
    view! {
        <div class="status" data-testid="status" data-state=move || state.get().key()>
            <span class="status-dot" aria-hidden="true"></span>
            <span class="status-label">{move || state.get().label()}</span>
        </div>
        <p class="visually-hidden" role="status" aria-live="polite" data-testid="announcer">
            {move || state.get().announcement()}
        </p>
    }
}
