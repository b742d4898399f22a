//! Live data in the page: the feed's model (plain, unit-tested types) and the browser's
//! EventSource as a reactive hook.

pub mod event_source;
pub mod model;
pub mod page_data;
pub mod post;
pub mod time;

pub use event_source::{use_event_source, Flow, SseMessage, OPENED};
pub use model::{format_delay, ConnectionState, Feed, FeedItem, NewItem, Watchers};
