//! The embedded role graph: a small property graph in its own SQLite file (`{data_dir}/graph.db`,
//! apart from the run store's database).
//!
//! Two tables mirror Neo4j one to one: `graph_nodes` (one row per node; the primary key
//! `(label, key)` is the uniqueness constraint) and `graph_edges` (one row per relationship;
//! the primary key is the MERGE pattern: type, both endpoints, identifying properties).
//! Properties are a JSON object per row. Deleting a node cascades to its relationships through
//! foreign keys, which is Neo4j's `DETACH DELETE`. The same write plans run here as against
//! Neo4j, one `BEGIN IMMEDIATE` transaction each (SQLite serialises writers; taking the write
//! lock up front avoids the deadlock of two readers upgrading at once).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::model::{Label, NodeRef, Owner, Props, Rel};
use super::plan::{EdgeRow, Op, Plan};
use super::read::{CompanyData, Subgraph};
use super::{Backend, GraphError, impl_role_graph};

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS graph_nodes (
        label   TEXT NOT NULL,
        key     TEXT NOT NULL,
        role_id TEXT,
        props   TEXT NOT NULL,
        PRIMARY KEY (label, key)
    )",
    "CREATE INDEX IF NOT EXISTS graph_nodes_role ON graph_nodes (role_id, label) WHERE role_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS graph_edges (
        rel        TEXT NOT NULL,
        from_label TEXT NOT NULL,
        from_key   TEXT NOT NULL,
        to_label   TEXT NOT NULL,
        to_key     TEXT NOT NULL,
        ident      TEXT NOT NULL,
        owner_role TEXT NOT NULL,
        props      TEXT NOT NULL,
        PRIMARY KEY (rel, from_label, from_key, to_label, to_key, ident),
        FOREIGN KEY (from_label, from_key) REFERENCES graph_nodes (label, key) ON DELETE CASCADE,
        FOREIGN KEY (to_label, to_key) REFERENCES graph_nodes (label, key) ON DELETE CASCADE
    )",
    "CREATE INDEX IF NOT EXISTS graph_edges_owner ON graph_edges (owner_role, rel)",
    // The cascades look relationships up by either endpoint.
    "CREATE INDEX IF NOT EXISTS graph_edges_from ON graph_edges (from_label, from_key)",
    "CREATE INDEX IF NOT EXISTS graph_edges_to ON graph_edges (to_label, to_key)",
];

/// The role graph in a SQLite file. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct EmbeddedGraph {
    pool: SqlitePool,
}

impl EmbeddedGraph {
    /// Opens (creating if needed) the graph file at `path` and ensures its schema.
    pub async fn open(path: &Path) -> Result<Self, GraphError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| GraphError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // SQLite rolls a transaction back by itself when a write meets a full disk; sqlx's
            // own ROLLBACK then fails and its connection keeps counting a transaction it does not
            // have, refusing every later BEGIN. Such a connection is closed, not reused, so the
            // graph writes again once the disk has room (the ping lets a queued rollback run).
            .after_release(|conn, _| {
                Box::pin(async move {
                    sqlx::Connection::ping(conn).await?;
                    Ok(!sqlx::Connection::is_in_transaction(conn))
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| GraphError::Config(format!("cannot open {}: {e}", path.display())))?;
        let me = Self { pool };
        me.schema().await?;
        Ok(me)
    }

    async fn schema(&self) -> Result<(), GraphError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await.map_err(classify)?;
        if version > SCHEMA_VERSION {
            return Err(GraphError::Config(format!(
                "graph.db has schema version {version}, newer than this build's {SCHEMA_VERSION}"
            )));
        }
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&mut *tx).await.map_err(classify)?;
        }
        // PRAGMA takes no bound parameters; the value is our own constant.
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {SCHEMA_VERSION}")))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn ping_once(&self) -> Result<(), GraphError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    async fn apply_plan(&self, plan: &Plan) -> Result<(), GraphError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
        for op in &plan.ops {
            // An error drops `tx`, which rolls the whole plan back.
            run_op(&mut tx, plan.step, op).await?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn subgraph(&self, role: &str) -> Result<Subgraph, GraphError> {
        // One read transaction: both queries see the same committed state.
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let nodes = sqlx::query("SELECT label, props FROM graph_nodes WHERE role_id = ?1")
            .bind(role)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let edges = sqlx::query(
            "SELECT e.rel, e.from_label, f.props, e.to_label, t.props, e.props FROM graph_edges e
             JOIN graph_nodes f ON f.label = e.from_label AND f.key = e.from_key
             JOIN graph_nodes t ON t.label = e.to_label AND t.key = e.to_key
             WHERE e.owner_role = ?1",
        )
        .bind(role)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        let mut g = Subgraph::default();
        for row in nodes {
            g.add_node(&col::<String>(&row, 0)?, decode_props(&col::<String>(&row, 1)?)?)?;
        }
        for row in edges {
            g.add_edge(
                &col::<String>(&row, 0)?,
                (&col::<String>(&row, 1)?, decode_props(&col::<String>(&row, 2)?)?),
                (&col::<String>(&row, 3)?, decode_props(&col::<String>(&row, 4)?)?),
                decode_props(&col::<String>(&row, 5)?)?,
            )?;
        }
        Ok(g)
    }

    async fn company_data(&self, company: &str) -> Result<Option<CompanyData>, GraphError> {
        let key = encode_key(&[company.to_owned()])?;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let props: Option<String> = sqlx::query_scalar("SELECT props FROM graph_nodes WHERE label = ?1 AND key = ?2")
            .bind(Label::Company.as_str())
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        let roles: Vec<String> = sqlx::query_scalar(
            "SELECT n.props FROM graph_edges e JOIN graph_nodes n ON n.label = e.to_label AND n.key = e.to_key
             WHERE e.rel = ?1 AND e.from_label = ?2 AND e.from_key = ?3",
        )
        .bind(Rel::HasRole.as_str())
        .bind(Label::Company.as_str())
        .bind(&key)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        let Some(props) = props else { return Ok(None) };
        Ok(Some(CompanyData {
            props: decode_props(&props)?,
            roles: roles.iter().map(|p| decode_props(p)).collect::<Result<_, _>>()?,
        }))
    }
}

#[async_trait]
impl Backend for EmbeddedGraph {
    async fn create_schema(&self) -> Result<(), GraphError> {
        self.schema().await
    }

    async fn check(&self) -> Result<(), GraphError> {
        self.ping_once().await
    }

    async fn apply(&self, plan: &Plan) -> Result<(), GraphError> {
        self.apply_plan(plan).await
    }

    async fn role_subgraph(&self, role: &str) -> Result<Subgraph, GraphError> {
        self.subgraph(role).await
    }

    async fn company(&self, company: &str) -> Result<Option<CompanyData>, GraphError> {
        self.company_data(company).await
    }
}

impl_role_graph!(EmbeddedGraph);

/// Maps a sqlx error to what a caller can do about it.
fn classify(e: sqlx::Error) -> GraphError {
    match &e {
        sqlx::Error::Database(db) => {
            // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes: another writer held the
            // database past the busy timeout.
            let primary = db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
            if matches!(primary, Some(5 | 6)) {
                GraphError::Conflict(e.to_string())
            } else {
                GraphError::Query(e.to_string())
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            GraphError::Unavailable(e.to_string())
        }
        sqlx::Error::Configuration(_) => GraphError::Config(e.to_string()),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => GraphError::Corrupt(e.to_string()),
        _ => GraphError::Query(e.to_string()),
    }
}

fn col<T>(row: &sqlx::sqlite::SqliteRow, index: usize) -> Result<T, GraphError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get::<T, _>(index).map_err(classify)
}

/// A node key as stored: a JSON array of its key values.
fn encode_key(key: &[String]) -> Result<String, GraphError> {
    serde_json::to_string(key).map_err(|e| GraphError::Corrupt(format!("cannot encode key: {e}")))
}

fn decode_key(text: &str) -> Result<Vec<String>, GraphError> {
    serde_json::from_str(text).map_err(|e| GraphError::Corrupt(format!("stored key {text:?}: {e}")))
}

fn encode_props(props: &Props) -> Result<String, GraphError> {
    serde_json::to_string(props).map_err(|e| GraphError::Corrupt(format!("cannot encode properties: {e}")))
}

fn decode_props(text: &str) -> Result<Props, GraphError> {
    serde_json::from_str(text).map_err(|e| GraphError::Corrupt(format!("stored properties: {e}")))
}

fn missing(step: &'static str, what: String) -> GraphError {
    GraphError::MissingReference { step, missing: what }
}

/// The role that owns a relationship, by its type's [`Owner`] rule.
fn owner_role(rel: Rel, row: &EdgeRow) -> Result<String, GraphError> {
    let found = match rel.owner() {
        Owner::From => row.from.first().cloned(),
        Owner::To => row.to.first().cloned(),
        Owner::Prop => row.ident.get("role_id").and_then(|v| v.as_str()).map(str::to_owned),
    };
    found.ok_or_else(|| GraphError::InvalidOutput(format!("a {rel} relationship has no owning role")))
}

async fn node_exists(conn: &mut SqliteConnection, node: &NodeRef) -> Result<bool, GraphError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM graph_nodes WHERE label = ?1 AND key = ?2")
        .bind(node.label.as_str())
        .bind(encode_key(&node.key)?)
        .fetch_optional(conn)
        .await
        .map_err(classify)?;
    Ok(found.is_some())
}

/// The stored properties of a relationship, or `None` if it does not exist.
async fn edge_props(conn: &mut SqliteConnection, rel: Rel, row: &EdgeRow) -> Result<Option<String>, GraphError> {
    let (from, to) = rel.endpoints();
    sqlx::query_scalar(
        "SELECT props FROM graph_edges
         WHERE rel = ?1 AND from_label = ?2 AND from_key = ?3 AND to_label = ?4 AND to_key = ?5 AND ident = ?6",
    )
    .bind(rel.as_str())
    .bind(from.as_str())
    .bind(encode_key(&row.from)?)
    .bind(to.as_str())
    .bind(encode_key(&row.to)?)
    .bind(encode_props(&row.ident)?)
    .fetch_optional(conn)
    .await
    .map_err(classify)
}

/// The role's relationships of `rel` as (rowid, start key, end key, properties).
async fn owned_edges(
    conn: &mut SqliteConnection,
    rel: Rel,
    role: &str,
) -> Result<Vec<(i64, Vec<String>, Vec<String>, String)>, GraphError> {
    let rows = sqlx::query("SELECT rowid, from_key, to_key, props FROM graph_edges WHERE owner_role = ?1 AND rel = ?2")
        .bind(role)
        .bind(rel.as_str())
        .fetch_all(conn)
        .await
        .map_err(classify)?;
    rows.iter()
        .map(|r| Ok((col(r, 0)?, decode_key(&col::<String>(r, 1)?)?, decode_key(&col::<String>(r, 2)?)?, col(r, 3)?)))
        .collect()
}

async fn run_op(conn: &mut SqliteConnection, step: &'static str, op: &Op) -> Result<(), GraphError> {
    match op {
        Op::RequireNode(node) => {
            if !node_exists(conn, node).await? {
                return Err(missing(step, node.to_string()));
            }
        }
        Op::MergeNodes { label, rows } => {
            for row in rows {
                let node = NodeRef { label: *label, key: row.key.clone() };
                let key = encode_key(&node.key)?;
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT props FROM graph_nodes WHERE label = ?1 AND key = ?2")
                        .bind(label.as_str())
                        .bind(&key)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(classify)?;
                let before = stored.as_deref().map(decode_props).transpose()?;
                let mut props = before.clone().unwrap_or_else(|| node.key_props());
                for (name, value) in &row.init {
                    props.entry(name.clone()).or_insert_with(|| value.clone());
                }
                props.extend(row.set.clone());
                if before.as_ref() == Some(&props) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO graph_nodes (label, key, role_id, props) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (label, key) DO UPDATE SET props = excluded.props",
                )
                .bind(label.as_str())
                .bind(&key)
                .bind(node.role_id())
                .bind(encode_props(&props)?)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
            }
        }
        Op::MergeEdges { rel, rows } => {
            let (from, to) = rel.endpoints();
            for row in rows {
                let a = NodeRef { label: from, key: row.from.clone() };
                let b = NodeRef { label: to, key: row.to.clone() };
                if !node_exists(conn, &a).await? || !node_exists(conn, &b).await? {
                    return Err(missing(step, format!("{a}-[:{rel}]->{b}")));
                }
                let before = edge_props(conn, *rel, row).await?.as_deref().map(decode_props).transpose()?;
                let mut props = before.clone().unwrap_or_else(|| row.ident.clone());
                props.extend(row.set.clone());
                if before.as_ref() == Some(&props) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO graph_edges (rel, from_label, from_key, to_label, to_key, ident, owner_role, props)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (rel, from_label, from_key, to_label, to_key, ident) DO UPDATE SET props = excluded.props",
                )
                .bind(rel.as_str())
                .bind(from.as_str())
                .bind(encode_key(&row.from)?)
                .bind(to.as_str())
                .bind(encode_key(&row.to)?)
                .bind(encode_props(&row.ident)?)
                .bind(owner_role(*rel, row)?)
                .bind(encode_props(&props)?)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
            }
        }
        Op::RequireEdges { rel, rows } => {
            let (from, to) = rel.endpoints();
            for row in rows {
                if edge_props(conn, *rel, row).await?.is_none() {
                    let a = NodeRef { label: from, key: row.from.clone() };
                    let b = NodeRef { label: to, key: row.to.clone() };
                    return Err(missing(step, format!("{a}-[:{rel}]->{b}")));
                }
            }
        }
        Op::DeleteNodes { label, role, keep } => {
            let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM graph_nodes WHERE role_id = ?1 AND label = ?2")
                .bind(role)
                .bind(label.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(classify)?;
            for key in keys {
                if keep.contains(&decode_key(&key)?) {
                    continue;
                }
                // The foreign keys cascade to the node's relationships (DETACH DELETE).
                sqlx::query("DELETE FROM graph_nodes WHERE label = ?1 AND key = ?2")
                    .bind(label.as_str())
                    .bind(&key)
                    .execute(&mut *conn)
                    .await
                    .map_err(classify)?;
            }
        }
        Op::DeleteEdges { rel, role, keep } => {
            for (rowid, from, to, _) in owned_edges(conn, *rel, role).await? {
                if !keep.keeps(&from, &to) {
                    sqlx::query("DELETE FROM graph_edges WHERE rowid = ?1")
                        .bind(rowid)
                        .execute(&mut *conn)
                        .await
                        .map_err(classify)?;
                }
            }
        }
        Op::RemoveEdgeProps { rel, role, props: names, keep } => {
            for (rowid, from, to, stored) in owned_edges(conn, *rel, role).await? {
                if keep.keeps(&from, &to) {
                    continue;
                }
                let mut props = decode_props(&stored)?;
                let before = props.len();
                props.retain(|name, _| !names.contains(&name.as_str()));
                if props.len() != before {
                    sqlx::query("UPDATE graph_edges SET props = ?1 WHERE rowid = ?2")
                        .bind(encode_props(&props)?)
                        .bind(rowid)
                        .execute(&mut *conn)
                        .await
                        .map_err(classify)?;
                }
            }
        }
        Op::DeleteNode(node) => {
            sqlx::query("DELETE FROM graph_nodes WHERE label = ?1 AND key = ?2")
                .bind(node.label.as_str())
                .bind(encode_key(&node.key)?)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
        }
    }
    Ok(())
}
