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
/// When `url` changes the connection is replaced; `None` closes it. `retry_ms` is the
/// reconnect delay the server asked for with `retry:`, which the browser does not expose;
/// it is only used to tell the reader how long a reconnect will take.
#[cfg(feature = "hydrate")]
pub fn use_event_source(
    url: Signal<Option<String>>,
    events: &'static [&'static str],
    retry_ms: u32,
    on_event: impl Fn(SseMessage) -> Flow + 'static,
) -> ReadSignal<ConnectionState> {
    let (state, set_state) = signal(ConnectionState::Connecting);
    let on_event: std::rc::Rc<dyn Fn(SseMessage) -> Flow> = std::rc::Rc::new(on_event);
    let connection = StoredValue::new_local(None::<browser::Connection>);
    Effect::new(move |_| {
        let url = url.get();
        // Dropping the old connection closes it before the new one opens.
        connection.set_value(None);
        if let Some(url) = url {
            set_state.set(ConnectionState::Connecting);
            match browser::Connection::open(&url, events, retry_ms, on_event.clone(), set_state) {
                Ok(open) => connection.set_value(Some(open)),
                Err(_) => set_state.set(ConnectionState::Failed),
            }
        }
    });
    on_cleanup(move || connection.set_value(None));
    state
}

/// Off the browser nothing connects: the page renders in its "connecting" state.
#[cfg(not(feature = "hydrate"))]
pub fn use_event_source(
    url: Signal<Option<String>>,
    events: &'static [&'static str],
    retry_ms: u32,
    on_event: impl Fn(SseMessage) -> Flow + 'static,
) -> ReadSignal<ConnectionState> {
    let _ = (url, events, retry_ms, on_event);
    let (state, _) = signal(ConnectionState::Connecting);
    state
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::{closure::Closure, JsCast, JsValue};
    use web_sys::{Event, EventSource, MessageEvent};

    use super::{ConnectionState, Flow, SseMessage};

    type Listener<E> = Closure<dyn FnMut(E)>;

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
            retry_ms: u32,
            on_event: Rc<dyn Fn(SseMessage) -> Flow>,
            set_state: WriteSignal<ConnectionState>,
        ) -> Result<Self, JsValue> {
            let source = EventSource::new(url)?;

            let on_events = events
                .iter()
                .map(|&name| {
                    let source_ref = source.clone();
                    let on_event = Rc::clone(&on_event);
                    let listener = Listener::<MessageEvent>::new(move |event: MessageEvent| {
                        let message = SseMessage {
                            event: name,
                            id: event.last_event_id(),
                            data: event.data().as_string().unwrap_or_default(),
                        };
                        if on_event(message) == Flow::Close {
                            source_ref.close();
                            set_state.set(ConnectionState::Ended);
                        }
                    });
                    source
                        .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
                        .map(|()| listener)
                })
                .collect::<Result<Vec<_>, _>>()?;

            let on_open = Listener::<Event>::new(move |_: Event| {
                set_state.set(ConnectionState::Live);
            });
            source.set_onopen(Some(on_open.as_ref().unchecked_ref()));

            let source_ref = source.clone();
            let on_error = Listener::<Event>::new(move |_: Event| {
                // The browser retries by itself while the state is CONNECTING; CLOSED means it
                // gave up (an HTTP error or a wrong content type).
                let next = if source_ref.ready_state() == EventSource::CONNECTING {
                    ConnectionState::Reconnecting { retry_ms }
                } else {
                    ConnectionState::Failed
                };
                set_state.update(|state| {
                    if *state != ConnectionState::Ended {
                        *state = next;
                    }
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
