//! Applied migrations whose text changed without changing what they do (their comments were
//! reworded). sqlx records each applied migration's checksum and refuses a store whose record
//! differs from the file, so before migrating, a store that recorded one of the superseded
//! checksums in `migrations/superseded.txt` is given the file's current checksum. Nothing else in
//! the store is touched, and a store that recorded any other checksum is left for sqlx to refuse.

use sqlx::migrate::Migrator;

/// `backend version checksum` of each superseded migration text, one per line; `#` comments.
const SUPERSEDED: &str = include_str!("../migrations/superseded.txt");

/// One recorded checksum to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// The migration's version.
    pub(crate) version: i64,
    /// The checksum a store may have recorded.
    pub(crate) superseded: Vec<u8>,
    /// The file's checksum now.
    pub(crate) current: Vec<u8>,
}

/// The repairs for `backend` (`postgres`, `sqlite`) against `migrator`'s files. A line naming no
/// migration of the backend, or not in hex, is skipped (the migrations test refuses such lines).
pub(crate) fn repairs(backend: &str, migrator: &Migrator) -> Vec<Repair> {
    superseded(backend)
        .filter_map(|(version, superseded)| {
            let current = migrator.iter().find(|m| m.version == version)?.checksum.to_vec();
            (current != superseded).then_some(Repair { version, superseded, current })
        })
        .collect()
}

/// The superseded checksums of `backend`'s migrations, by version.
pub(crate) fn superseded(backend: &str) -> impl Iterator<Item = (i64, Vec<u8>)> + '_ {
    SUPERSEDED.lines().filter(|l| !l.starts_with('#')).filter_map(move |line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != backend {
            return None;
        }
        let version = fields.next()?.parse().ok()?;
        let checksum = hex::decode(fields.next()?).ok()?;
        Some((version, checksum))
    })
}
