//! One module per page.

pub mod about;
pub mod counter;
pub mod not_found;
pub mod topic;
pub mod topics;
