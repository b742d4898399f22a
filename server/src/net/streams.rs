//! What every event-stream handler shares, whatever the feature: the token that ends every
//! stream at shutdown, the keep-alive interval, and the caps on streams HTTP/2 carries.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::caps::Caps;

/// The server-wide settings of event streams.
#[derive(Clone, Debug)]
pub struct EventStreams {
    /// Cancelled when the server shuts down; every open stream ends then.
    pub shutdown: CancellationToken,
    /// How long a stream may stay silent before it gets a keep-alive comment.
    pub keep_alive: Duration,
    /// How many streams HTTP/2 carries, in all and per client address.
    pub caps: Arc<Caps>,
}
