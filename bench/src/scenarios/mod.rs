//! The benchmark scenarios, each run in one deployment profile and answering one report section.

pub mod batch;
pub mod e2e;
pub mod fanout;
pub mod push;
pub mod read;
