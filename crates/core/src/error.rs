//! Printing an error together with its causes.
//!
//! The workspace's errors follow one convention: an error's `Display` says what failed, in words,
//! and the underlying error (an I/O, database, Redis or parse error) is its
//! [`source`](std::error::Error::source), not repeated in its text. `anyhow`'s `{:#}` and `{:?}`
//! print the whole chain; a log line or a message built from `Display` alone would drop the cause,
//! so such edges print [`chain`] instead.

use std::error::Error;
use std::fmt;

/// `error` and every error under it, joined by `": "` (as `anyhow`'s `{:#}` prints them):
/// `cannot open the run store: store database error: pool timed out while waiting for an open
/// connection`.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
#[derive(Clone, Copy)]
pub struct Chain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot open the store")]
        Open(#[source] Inner),
        #[error("nothing underneath")]
        Alone,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {0}")]
    struct Inner(&'static str, #[source] std::io::Error);

    #[test]
    fn every_cause_is_printed_once_in_order() {
        let err = Outer::Open(Inner("store.db", std::io::Error::other("disk on fire")));
        assert_eq!(chain(&err).to_string(), "cannot open the store: cannot read store.db: disk on fire");
        assert_eq!(format!("{:?}", chain(&err)), "cannot open the store: cannot read store.db: disk on fire");
    }

    #[test]
    fn an_error_without_a_source_is_its_display() {
        assert_eq!(chain(&Outer::Alone).to_string(), "nothing underneath");
    }
}
