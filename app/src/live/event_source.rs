//! The browser's `EventSource` as a Leptos hook.
//!
//! [`use_event_source`] has two twins with the same signature: in the browser (feature
//! `hydrate`) it opens the connection, forwards the named events and tracks the connection's
//! state; everywhere else (server rendering, host unit tests) it opens nothing and reports
//! [`ConnectionState::Connecting`], which is what the server-rendered page shows.
//! The connection is closed when the calling component is unmounted.

use leptos::prelude::*;

use super::model::ConnectionState;

/// The name [`SseMessage::event`] has when a connection opens (or opens again): a page
/// that keeps state about the stream (a health warning, say) can start afresh then.
pub const OPENED: &str = "open";

/// One event as the browser received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseMessage {
    /// The event name it was registered under (`message` for unnamed events), or
    /// [`OPENED`] when a connection opened (then `id` and `data` are empty).
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

/// Subscribes to `url` in the browser and calls `on_event` for each event named in `events`
/// (and with [`OPENED`] each time a connection opens).
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
    let (state, set_state) = signal(ConnectionState::Connecting);
    let stream = browser::Stream::start(
        url,
        Box::new(resume_url),
        events,
        retry_ms,
        Box::new(on_event),
        set_state,
    );
    let stream = StoredValue::new_local(Some(stream));
    on_cleanup(move || {
        if let Some(stream) = stream.try_update_value(Option::take).flatten() {
            stream.stop();
        }
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
    //! Plain Rust around the browser's objects: one [`Stream`] per hook, which owns the
    //! current `EventSource` and the timer that replaces it after the browser gave up.

    use std::{
        cell::{Cell, RefCell},
        rc::{Rc, Weak},
    };

    use leptos::prelude::{Set, WriteSignal};
    use wasm_bindgen::{closure::Closure, JsCast};
    use web_sys::{Event, EventSource, MessageEvent};

    use super::{ConnectionState, Flow, SseMessage, OPENED};
    use crate::live::model::reopen_delay;

    type Listener<E> = Closure<dyn FnMut(E)>;

    /// A subscription that outlives any one connection.
    pub(super) struct Stream {
        url: String,
        resume_url: Box<dyn Fn(&str) -> String>,
        events: &'static [&'static str],
        retry_ms: u32,
        on_event: Box<dyn Fn(SseMessage) -> Flow>,
        set_state: WriteSignal<ConnectionState>,
        /// The id of the last event received.
        last_id: RefCell<String>,
        /// How many times in a row the browser gave up.
        failures: Cell<u32>,
        /// Closed for good: by the page, or because the component is gone.
        done: Cell<bool>,
        connection: RefCell<Option<Connection>>,
        /// The pending reopen: the browser's timer id and its callback.
        timer: RefCell<Option<(i32, Listener<Event>)>>,
        /// The callback of the timer before, kept until the next one: it may be the one
        /// running when it is replaced, and a closure must outlive its own call.
        retired: RefCell<Option<Listener<Event>>>,
    }

    impl Stream {
        pub(super) fn start(
            url: String,
            resume_url: Box<dyn Fn(&str) -> String>,
            events: &'static [&'static str],
            retry_ms: u32,
            on_event: Box<dyn Fn(SseMessage) -> Flow>,
            set_state: WriteSignal<ConnectionState>,
        ) -> Rc<Self> {
            let stream = Rc::new(Self {
                url,
                resume_url,
                events,
                retry_ms,
                on_event,
                set_state,
                last_id: RefCell::default(),
                failures: Cell::new(0),
                done: Cell::new(false),
                connection: RefCell::default(),
                timer: RefCell::default(),
                retired: RefCell::default(),
            });
            stream.open();
            stream
        }

        /// Closes the connection and cancels a pending reopen.
        pub(super) fn stop(&self) {
            self.done.set(true);
            self.connection.take();
            if let Some((id, _callback)) = self.timer.take() {
                if let Some(window) = web_sys::window() {
                    window.clear_timeout_with_handle(id);
                }
            }
        }

        /// Opens a connection (resuming after the last event, if any), replacing the old one.
        fn open(self: &Rc<Self>) {
            self.connection.take();
            if self.done.get() {
                return;
            }
            let target = {
                let last_id = self.last_id.borrow();
                if last_id.is_empty() {
                    self.url.clone()
                } else {
                    (self.resume_url)(&last_id)
                }
            };
            self.set_state.set(ConnectionState::Connecting);
            match Connection::open(&target, self.events, Rc::downgrade(self)) {
                Ok(connection) => *self.connection.borrow_mut() = Some(connection),
                Err(()) => self.gave_up(),
            }
        }

        fn opened(&self) {
            self.failures.set(0);
            self.set_state.set(ConnectionState::Live);
            let _ = (self.on_event)(SseMessage {
                event: OPENED,
                id: String::new(),
                data: String::new(),
            });
        }

        fn received(&self, message: SseMessage) {
            if !message.id.is_empty() {
                self.last_id.replace(message.id.clone());
            }
            if (self.on_event)(message) == Flow::Close {
                // Closed, not dropped: this runs inside one of the connection's callbacks.
                self.done.set(true);
                if let Some(connection) = &*self.connection.borrow() {
                    connection.source.close();
                }
                self.set_state.set(ConnectionState::Ended);
            }
        }

        /// The connection dropped; the browser reconnects by itself.
        fn retrying(&self) {
            if !self.done.get() {
                self.set_state.set(ConnectionState::Reconnecting {
                    retry_ms: self.retry_ms,
                });
            }
        }

        /// The browser gave up on the connection: open a new one later.
        fn gave_up(self: &Rc<Self>) {
            if self.done.get() {
                return;
            }
            let failures = self.failures.get();
            self.failures.set(failures.saturating_add(1));
            let delay = reopen_delay(self.retry_ms, failures, 0.8 + 0.4 * js_sys::Math::random());
            self.set_state
                .set(ConnectionState::Failed { retry_ms: delay });
            let weak = Rc::downgrade(self);
            let callback = Listener::<Event>::new(move |_: Event| {
                if let Some(stream) = weak.upgrade() {
                    stream.open();
                }
            });
            if let Some((_, old)) = self.timer.take() {
                self.retired.replace(Some(old));
            }
            let id = web_sys::window().and_then(|window| {
                window
                    .set_timeout_with_callback_and_timeout_and_arguments_0(
                        callback.as_ref().unchecked_ref(),
                        i32::try_from(delay).unwrap_or(i32::MAX),
                    )
                    .ok()
            });
            if let Some(id) = id {
                *self.timer.borrow_mut() = Some((id, callback));
            }
        }
    }

    /// An open `EventSource` and the callbacks it holds; dropping it closes the connection.
    struct Connection {
        source: EventSource,
        _on_open: Listener<Event>,
        _on_error: Listener<Event>,
        _on_events: Vec<Listener<MessageEvent>>,
    }

    impl Connection {
        fn open(
            url: &str,
            events: &'static [&'static str],
            stream: Weak<Stream>,
        ) -> Result<Self, ()> {
            let source = EventSource::new(url).map_err(drop)?;

            let on_events = events
                .iter()
                .map(|&name| {
                    let stream = Weak::clone(&stream);
                    let listener = Listener::<MessageEvent>::new(move |event: MessageEvent| {
                        if let Some(stream) = stream.upgrade() {
                            stream.received(SseMessage {
                                event: name,
                                id: event.last_event_id(),
                                data: event.data().as_string().unwrap_or_default(),
                            });
                        }
                    });
                    source
                        .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
                        .map(|()| listener)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(drop)?;

            let opened = Weak::clone(&stream);
            let on_open = Listener::<Event>::new(move |_: Event| {
                if let Some(stream) = opened.upgrade() {
                    stream.opened();
                }
            });
            source.set_onopen(Some(on_open.as_ref().unchecked_ref()));

            let source_ref = source.clone();
            let on_error = Listener::<Event>::new(move |_: Event| {
                let Some(stream) = stream.upgrade() else {
                    return;
                };
                // The browser retries by itself while the state is CONNECTING; CLOSED means it
                // gave up (an HTTP error or a wrong content type).
                if source_ref.ready_state() == EventSource::CONNECTING {
                    stream.retrying();
                } else {
                    stream.gave_up();
                }
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
