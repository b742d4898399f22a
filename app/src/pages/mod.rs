//! One module per page.

pub mod about;
pub mod counter;
pub mod not_found;
