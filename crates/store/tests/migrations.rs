//! Applied migrations are frozen. sqlx records each migration's checksum in the database and
//! refuses to start when a migration it applied earlier has changed since — so an edit to an old
//! migration (even to a comment) would stop every deployed store at its next start. This test
//! keeps the checksum of every migration in `migrations/applied.txt`: a changed migration fails
//! here, not in production; a new one is recorded with `ETTER_BLESS=1`, which only ever appends.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

const RECORD: &str = "migrations/applied.txt";

fn current() -> Vec<String> {
    let mut lines = Vec::new();
    for (backend, migrator) in
        [("postgres", sqlx::migrate!("./migrations/postgres")), ("sqlite", sqlx::migrate!("./migrations/sqlite"))]
    {
        for m in migrator.iter() {
            lines.push(format!("{backend} {:04} {} {}", m.version, hex::encode(&m.checksum), m.description));
        }
    }
    lines
}

fn key(line: &str) -> String {
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn no_applied_migration_has_changed_and_every_migration_is_recorded() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORD);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let recorded: BTreeMap<String, String> =
        text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| (key(l), l.to_owned())).collect();
    let mut changed = Vec::new();
    let mut new = Vec::new();
    for line in current() {
        match recorded.get(&key(&line)) {
            Some(kept) if *kept == line => {}
            Some(kept) => changed.push(format!("  recorded: {kept}\n  now:      {line}")),
            None => new.push(line),
        }
    }
    if !changed.is_empty() {
        bail!(
            "an applied migration changed; deployed stores would refuse to start. Put the change in a new \
             migration and restore the old file:\n{}",
            changed.join("\n")
        );
    }
    if !new.is_empty() {
        if std::env::var_os("ETTER_BLESS").is_some() {
            let mut text = text;
            for line in &new {
                text.push_str(line);
                text.push('\n');
            }
            std::fs::write(&path, text)?;
        } else {
            bail!("migrations not recorded in {RECORD} (ETTER_BLESS=1 records them):\n{}", new.join("\n"));
        }
    }
    Ok(())
}
