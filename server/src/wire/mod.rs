//! The wire: Server-Sent Events encoding and HTTP/1.1 chunk framing. Pure functions over
//! bytes, with no dependency on the rest of the server; everything above writes through
//! them.

pub mod chunk;
pub mod sse;
