//! Stream delivery: a subscriber's queue and socket ([`sink`]), the response body every
//! event stream shares ([`body`]), the clock grid streams share ([`ticks`]), and the
//! shutdown every stream watches ([`shutdown`]). Below the network; knows updates and the
//! wire.

pub mod body;
pub mod shutdown;
pub mod sink;
pub mod ticks;
