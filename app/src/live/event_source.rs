//! The browser's `EventSource` as a Leptos hook.
//!
//! [`use_event_source`] has two twins with the same signature: in the browser (feature
//! `hydrate`) it opens the connection, forwards the named events and tracks the connection's
//! state; everywhere else (server rendering, host unit tests) it opens nothing and reports
//! [`ConnectionState::Connecting`], which is what the server-rendered page shows.
//! The connection is closed when the calling component is unmounted.

use leptos::prelude::*;

use super::model::ConnectionState;

/// One event as the browser received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseMessage {
    /// The event name it was registered under (`message` for unnamed events).
    pub event: &'static str,
    /// The stream's last event id when it arrived (the browser carries it over from an
    /// earlier event when this one has none).
    pub id: String,
    /// The event's data, lines joined with `\n`.
    pub data: String,
}

/// What the hook does after an event has been handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep listening.
    Continue,
    /// Close the connection for good (the state becomes [`ConnectionState::Ended`]), so the
    /// browser does not reconnect.
    Close,
}

/// Subscribes to `url` in the browser and calls `on_event` for each event named in `events`.
///
/// `retry_ms` is the reconnect delay the server asked for with `retry:`, which the browser
/// does not expose: the page says how long a reconnect will take with it. While the stream
/// drops and comes back the browser reconnects by itself, resuming with `Last-Event-ID`.
/// When it gives up (the server or a proxy answered with an error), the hook opens a new
/// connection at `resume_url(last_id)` after a growing delay ([`reopen_delay`]); `last_id`
/// is the id of the last event received, empty if none came (then `url` is opened again).
///
/// The connection is closed when the calling component is unmounted.
///
/// [`reopen_delay`]: super::model::reopen_delay
#[cfg(feature = "hydrate")]
pub fn use_event_source(
    url: String,
    resume_url: impl Fn(&str) -> String + 'static,
    events: &'static [&'static str],
    retry_ms: u32,
    on_event: impl Fn(SseMessage) -> Flow + 'static,
) -> ReadSignal<ConnectionState> {
    use std::{rc::Rc, time::Duration};

    use super::model::reopen_delay;
    use browser::Status;

    let (state, set_state) = signal(ConnectionState::Connecting);
    let last_id = StoredValue::new_local(String::new());
    let on_event: Rc<dyn Fn(SseMessage) -> Flow> = Rc::new(move |message: SseMessage| {
        if !message.id.is_empty() {
            last_id.set_value(message.id.clone());
        }
        on_event(message)
    });
    // Bumped to open a new connection after the browser gave up on the last one.
    let reopen = RwSignal::new(0u32);
    let failures = StoredValue::new(0u32);
    let timer = StoredValue::new_local(None::<TimeoutHandle>);
    let on_status: Rc<dyn Fn(Status)> = Rc::new(move |status| match status {
        Status::Open => {
            failures.set_value(0);
            set_state.set(ConnectionState::Live);
        }
        Status::Retrying => set_state.update(|state| {
            if *state != ConnectionState::Ended {
                *state = ConnectionState::Reconnecting { retry_ms };
            }
        }),
        Status::Ended => set_state.set(ConnectionState::Ended),
        Status::GaveUp => {
            if state.get_untracked() == ConnectionState::Ended {
                return;
            }
            let delay = reopen_delay(
                retry_ms,
                failures.get_value(),
                0.8 + 0.4 * js_sys::Math::random(),
            );
            failures.update_value(|n| *n = n.saturating_add(1));
            set_state.set(ConnectionState::Failed { retry_ms: delay });
            let handle = set_timeout_with_handle(
                move || reopen.update(|n| *n = n.wrapping_add(1)),
                Duration::from_millis(u64::from(delay)),
            );
            timer.set_value(handle.ok());
        }
    });
    let connection = StoredValue::new_local(None::<browser::Connection>);
    Effect::new(move |_| {
        let reopening = reopen.get() > 0;
        // Dropping the old connection closes it before the new one opens.
        connection.set_value(None);
        let last = last_id.get_value();
        let target = if reopening && !last.is_empty() {
            resume_url(&last)
        } else {
            url.clone()
        };
        set_state.set(ConnectionState::Connecting);
        match browser::Connection::open(&target, events, on_event.clone(), on_status.clone()) {
            Ok(open) => connection.set_value(Some(open)),
            Err(_) => on_status(Status::GaveUp),
        }
    });
    on_cleanup(move || {
        if let Some(timer) = timer.try_update_value(Option::take).flatten() {
            timer.clear();
        }
        connection.set_value(None);
    });
    state
}

/// Off the browser nothing connects: the page renders in its "connecting" state.
#[cfg(not(feature = "hydrate"))]
pub fn use_event_source(
    url: String,
    resume_url: impl Fn(&str) -> String + 'static,
    events: &'static [&'static str],
    retry_ms: u32,
    on_event: impl Fn(SseMessage) -> Flow + 'static,
) -> ReadSignal<ConnectionState> {
    let _ = (url, resume_url, events, retry_ms, on_event);
    let (state, _) = signal(ConnectionState::Connecting);
    state
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::rc::Rc;

    use wasm_bindgen::{closure::Closure, JsCast, JsValue};
    use web_sys::{Event, EventSource, MessageEvent};

    use super::{Flow, SseMessage};

    type Listener<E> = Closure<dyn FnMut(E)>;

    /// What happened to a connection.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Status {
        /// The stream is open.
        Open,
        /// The stream dropped; the browser reconnects by itself.
        Retrying,
        /// The browser gave up on this connection.
        GaveUp,
        /// The page closed the stream for good.
        Ended,
    }

    /// An open `EventSource` and the callbacks it holds; dropping it closes the connection.
    pub(super) struct Connection {
        source: EventSource,
        _on_open: Listener<Event>,
        _on_error: Listener<Event>,
        _on_events: Vec<Listener<MessageEvent>>,
    }

    impl Connection {
        pub(super) fn open(
            url: &str,
            events: &'static [&'static str],
            on_event: Rc<dyn Fn(SseMessage) -> Flow>,
            on_status: Rc<dyn Fn(Status)>,
        ) -> Result<Self, JsValue> {
            let source = EventSource::new(url)?;

            let on_events = events
                .iter()
                .map(|&name| {
                    let source_ref = source.clone();
                    let on_event = Rc::clone(&on_event);
                    let on_status = Rc::clone(&on_status);
                    let listener = Listener::<MessageEvent>::new(move |event: MessageEvent| {
                        let message = SseMessage {
                            event: name,
                            id: event.last_event_id(),
                            data: event.data().as_string().unwrap_or_default(),
                        };
                        if on_event(message) == Flow::Close {
                            source_ref.close();
                            on_status(Status::Ended);
                        }
                    });
                    source
                        .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
                        .map(|()| listener)
                })
                .collect::<Result<Vec<_>, _>>()?;

            let opened = Rc::clone(&on_status);
            let on_open = Listener::<Event>::new(move |_: Event| opened(Status::Open));
            source.set_onopen(Some(on_open.as_ref().unchecked_ref()));

            let source_ref = source.clone();
            let on_error = Listener::<Event>::new(move |_: Event| {
                // The browser retries by itself while the state is CONNECTING; CLOSED means it
                // gave up (an HTTP error or a wrong content type).
                on_status(if source_ref.ready_state() == EventSource::CONNECTING {
                    Status::Retrying
                } else {
                    Status::GaveUp
                });
            });
            source.set_onerror(Some(on_error.as_ref().unchecked_ref()));

            Ok(Self {
                source,
                _on_open: on_open,
                _on_error: on_error,
                _on_events: on_events,
            })
        }
    }

    impl Drop for Connection {
        fn drop(&mut self) {
            self.source.set_onopen(None);
            self.source.set_onerror(None);
            self.source.close();
        }
    }
}
