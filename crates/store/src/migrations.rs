//! Applied migrations whose text changed without changing what they do (their comments were
//! reworded). sqlx records each applied migration's checksum and refuses a store whose record
//! differs from the file. A store that applied the old text recorded its checksum, listed in
//! `migrations/superseded.txt`: for such a store the migrator is given the recorded checksum of
//! that migration, so it opens. The record itself is not touched, so binaries built before the
//! rewording keep opening the store too (a rolling upgrade runs both at once); any other
//! difference is still refused.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::migrate::Migrator;

/// `backend version checksum` of each superseded migration text, one per line; `#` comments.
const SUPERSEDED: &str = include_str!("../migrations/superseded.txt");

/// `migrator` accepting, for each migration whose `recorded` checksum (by version) is one of its
/// superseded ones for `backend` (`postgres`, `sqlite`), that checksum.
pub(crate) fn accepting_superseded(
    backend: &str,
    mut migrator: Migrator,
    recorded: &HashMap<i64, Vec<u8>>,
) -> Migrator {
    let superseded: Vec<(i64, Vec<u8>)> = superseded(backend).collect();
    let accepted = |version: i64| {
        let recorded = recorded.get(&version)?;
        superseded.iter().any(|(v, checksum)| *v == version && checksum == recorded).then(|| recorded.clone())
    };
    if migrator.iter().all(|m| accepted(m.version).is_none()) {
        return migrator;
    }
    let migrations = migrator
        .iter()
        .cloned()
        .map(|mut migration| {
            if let Some(checksum) = accepted(migration.version) {
                migration.checksum = Cow::Owned(checksum);
            }
            migration
        })
        .collect::<Vec<_>>();
    // The one field of the migrator set here (public for `migrate!`; sqlx is pinned in Cargo.lock).
    migrator.migrations = Cow::Owned(migrations);
    migrator
}

/// The superseded checksums of `backend`'s migrations, by version. A line not in this form is
/// skipped (the migrations test refuses such lines).
fn superseded(backend: &str) -> impl Iterator<Item = (i64, Vec<u8>)> + '_ {
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
