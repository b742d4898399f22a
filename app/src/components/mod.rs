//! Building blocks shared by the pages.

pub mod composer;
pub mod feed_list;
pub mod status;

pub use composer::Composer;
pub use feed_list::FeedList;
pub use status::ConnectionStatus;
