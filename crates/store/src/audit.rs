//! Verifying the audit log: reads the whole chain page by page and walks it
//! ([`etter_core::audit::ChainWalk`]).

use etter_core::audit::{ChainBreak, ChainKey, ChainWalk, Verified};

use crate::RunStore;
use crate::StoreError;

/// Why the log could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken.
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    /// The store could not be read.
    #[error("cannot read the audit log")]
    Store(#[from] StoreError),
}

/// Walks the whole log in order and checks every link (keyed hashes under `key`) and the
/// checkpointed head. With `expect_head` (a hash recorded elsewhere, such as the head the server
/// logs), the log must also still hold an entry with that hash.
pub async fn verify_audit(
    store: &dyn RunStore,
    key: &ChainKey,
    expect_head: Option<&str>,
) -> Result<Verified, VerifyError> {
    const PAGE: u32 = 1000;
    let head = store.audit_head().await?;
    let mut walk = ChainWalk::new(key, expect_head);
    loop {
        let page = store.audit_entries(walk.position(), PAGE).await?;
        let more = page.len() == PAGE as usize;
        for entry in page {
            walk.next(entry)?;
        }
        if !more {
            return Ok(walk.finish(head)?);
        }
    }
}
