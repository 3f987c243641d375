//! The production role graph: Neo4j over Bolt with neo4rs.
//!
//! Cypher is generated from the schema tables in [`super::model`]; labels, relationship types
//! and property names come from those `'static` tables, never from input, and every value is a
//! query parameter. Each plan runs in one explicit transaction; a transaction that loses a race
//! (deadlock on a shared skill node) is retried whole.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use neo4rs::{BoltType, Query, Txn};

use super::model::{Label, NodeRef, Owner, PropValue, Props, Rel};
use super::plan::{EdgeRow, Keep, NodeRow, Op, Plan};
use super::read::{CompanyData, Subgraph};
use super::{Backend, GraphConfig, GraphError, impl_role_graph};

/// How often a plan is retried when Neo4j reports a transient error (deadlock, lock timeout).
const MAX_ATTEMPTS: u32 = 6;
/// How long a connectivity check may take.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The role graph in Neo4j. Cheap to clone (a connection pool).
#[derive(Clone)]
pub struct Neo4jGraph {
    graph: neo4rs::Graph,
}

impl std::fmt::Debug for Neo4jGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jGraph").finish_non_exhaustive()
    }
}

impl Neo4jGraph {
    /// Connects to `graph.uri` (`bolt://host:port`, `bolt+s://` for TLS with the system's roots
    /// and `graph.ca_file`) and checks that the server answers. An empty password is sent as is
    /// (servers with authentication off accept any).
    pub async fn connect(settings: &GraphConfig) -> Result<Self, GraphError> {
        let uri = settings.uri.as_str();
        let mut config = neo4rs::ConfigBuilder::default()
            .uri(uri)
            .user(settings.user.as_str())
            .password(settings.password.expose().unwrap_or_default())
            .fetch_size(1000);
        if !settings.ca_file.as_os_str().is_empty() {
            // neo4rs adds these to the roots it trusts (its name for them notwithstanding).
            config = config.with_client_certificate(&settings.ca_file);
        }
        let config = config.build().map_err(|e| GraphError::Config(format!("neo4j at {uri}: {e}")))?;
        // A handshake TLS refused: what to change, in this hop's settings (Neo4j's TLS alerts can
        // also surface from the first query, so both are looked at).
        let fixes = etter_config::tls::Fixes {
            ca: "`graph.ca_file`".to_owned(),
            identity: "client certificates (which this Neo4j client cannot send)".to_owned(),
            server_name: "a host in `graph.uri` that the certificate carries".to_owned(),
        };
        // `shown` is the error as the message says it; `probe` is what is read for TLS's verdict.
        let refused_by_tls = |shown: &str, probe: &str| {
            etter_config::tls::advice(probe, &fixes)
                .map(|advice| GraphError::Config(format!("neo4j at {uri}: {shown}: {advice}")))
        };
        let graph = neo4rs::Graph::connect(config)
            .await
            .map_err(|e| refused_by_tls(&e.to_string(), &format!("{e} {e:?}")).unwrap_or_else(|| classify(&e)))?;
        let me = Self { graph };
        me.ping_once().await.map_err(|e| match &e {
            GraphError::Unavailable(message) | GraphError::Query(message) => {
                refused_by_tls(message, message).unwrap_or(e)
            }
            _ => e,
        })?;
        Ok(me)
    }

    async fn ping_once(&self) -> Result<(), GraphError> {
        let graph = self.graph.clone();
        let check = to_completion(async move {
            let mut txn = graph.start_txn().await.map_err(|e| classify(&e))?;
            rows(&mut txn, neo4rs::query("RETURN 1 AS one")).await?;
            txn.commit().await.map_err(|e| classify(&e))
        });
        // Past the deadline the ping is left to finish (or fail) on its own.
        tokio::time::timeout(PING_TIMEOUT, check)
            .await
            .map_err(|_| GraphError::Unavailable(format!("neo4j did not answer within {PING_TIMEOUT:?}")))?
    }

    async fn schema(&self) -> Result<(), GraphError> {
        for statement in schema_statements() {
            retry(|| async {
                let mut txn = self.graph.start_txn().await.map_err(|e| classify(&e))?;
                match txn.run(neo4rs::query(&statement)).await {
                    Ok(()) => txn.commit().await.map_err(|e| classify(&e)),
                    // Two workers starting at once race on `IF NOT EXISTS`; the loser finds
                    // the rule already there, which is what it wanted.
                    Err(e) if e.to_string().contains("AlreadyExists") => Ok(()),
                    Err(e) => Err(classify(&e)),
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn apply_once(&self, plan: &Plan) -> Result<(), GraphError> {
        let mut txn = self.graph.start_txn().await.map_err(|e| classify(&e))?;
        for op in &plan.ops {
            if let Err(e) = run_op(&mut txn, plan.step, op).await {
                // Best effort: the pool resets a connection it gets back anyway.
                let _ = txn.rollback().await;
                return Err(e);
            }
        }
        txn.commit().await.map_err(|e| classify(&e))
    }

    async fn subgraph(&self, role: &str) -> Result<Subgraph, GraphError> {
        let mut parts: Vec<String> = Label::ALL
            .into_iter()
            .filter(|l| l.is_role_scoped())
            .map(|l| {
                format!(
                    "MATCH (a:{l} {{role_id: $role}}) RETURN '' AS rel, labels(a)[0] AS al, properties(a) AS ap, \
                     '' AS bl, {{}} AS bp, {{}} AS rp"
                )
            })
            .collect();
        parts.extend(Rel::ALL.into_iter().map(|rel| {
            format!(
                "{} RETURN type(r) AS rel, labels(a)[0] AS al, properties(a) AS ap, labels(b)[0] AS bl, \
                 properties(b) AS bp, properties(r) AS rp",
                owned_match(rel)
            )
        }));
        let query = neo4rs::query(&parts.join(" UNION ALL ")).param("role", role);
        let mut txn = self.graph.start_txn().await.map_err(|e| classify(&e))?;
        let found = rows(&mut txn, query).await?;
        txn.commit().await.map_err(|e| classify(&e))?;
        let mut g = Subgraph::default();
        for row in found {
            let rel: String = get(&row, "rel")?;
            let a = (get::<String>(&row, "al")?, get::<Props>(&row, "ap")?);
            if rel.is_empty() {
                g.add_node(&a.0, a.1)?;
            } else {
                let b = (get::<String>(&row, "bl")?, get::<Props>(&row, "bp")?);
                g.add_edge(&rel, (&a.0, a.1), (&b.0, b.1), get(&row, "rp")?)?;
            }
        }
        Ok(g)
    }

    async fn company_data(&self, company: &str) -> Result<Option<CompanyData>, GraphError> {
        let query = neo4rs::query(
            "MATCH (c:Company {company_id: $company}) OPTIONAL MATCH (c)-[:HAS_ROLE]->(r:CompanyRole) \
             RETURN properties(c) AS cp, collect(properties(r)) AS roles",
        )
        .param("company", company);
        let mut txn = self.graph.start_txn().await.map_err(|e| classify(&e))?;
        let found = rows(&mut txn, query).await?;
        txn.commit().await.map_err(|e| classify(&e))?;
        found.first().map(|row| Ok(CompanyData { props: get(row, "cp")?, roles: get(row, "roles")? })).transpose()
    }
}

#[async_trait]
impl Backend for Neo4jGraph {
    async fn create_schema(&self) -> Result<(), GraphError> {
        self.schema().await
    }

    async fn check(&self) -> Result<(), GraphError> {
        self.ping_once().await
    }

    async fn apply(&self, plan: &Plan) -> Result<(), GraphError> {
        let (graph, plan) = (self.clone(), plan.clone());
        to_completion(async move { retry(|| graph.apply_once(&plan)).await }).await
    }

    async fn role_subgraph(&self, role: &str) -> Result<Subgraph, GraphError> {
        let (graph, role) = (self.clone(), role.to_owned());
        to_completion(async move { graph.subgraph(&role).await }).await
    }

    async fn company(&self, company: &str) -> Result<Option<CompanyData>, GraphError> {
        let (graph, company) = (self.clone(), company.to_owned());
        to_completion(async move { graph.company_data(&company).await }).await
    }
}

impl_role_graph!(Neo4jGraph);

/// Runs one exchange with Neo4j in a task of its own, so it always runs to its end. A caller
/// that gives up (an activity cancelled or timed out, a ping past its deadline, a client gone)
/// must not drop a transaction mid-exchange: neo4rs would take back a connection with unread
/// responses, and its RESET on recycling accepts any success — the next transaction on that
/// connection would read the answers meant for this one (a node "not in the graph" that is).
async fn to_completion<T: Send + 'static>(
    exchange: impl Future<Output = Result<T, GraphError>> + Send + 'static,
) -> Result<T, GraphError> {
    tokio::spawn(exchange)
        .await
        .map_err(|e| GraphError::Unavailable(format!("the graph exchange did not finish: {e}")))?
}

/// Runs `attempt` again while it fails with a conflict, backing off; the write is one
/// transaction, so a retry starts from a clean slate.
async fn retry<F, Fut>(mut attempt: F) -> Result<(), GraphError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), GraphError>>,
{
    let mut delay = Duration::from_millis(20);
    for n in 1.. {
        match attempt().await {
            Err(GraphError::Conflict(reason)) if n < MAX_ATTEMPTS => {
                tracing::debug!(attempt = n, %reason, "neo4j transaction conflicted, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    Ok(())
}

/// Maps a neo4rs error to what a caller can do about it.
fn classify(e: &neo4rs::Error) -> GraphError {
    match e {
        neo4rs::Error::IOError { .. } | neo4rs::Error::ConnectionError => GraphError::Unavailable(e.to_string()),
        neo4rs::Error::Neo4j(n) => classify_code(n.code(), e),
        // neo4rs reports a server failure while streaming rows (PULL) or at COMMIT as an
        // "unexpected message" that embeds the failure; a deadlock detected there is as
        // retryable as one detected at RUN, so look for the status code in the text.
        neo4rs::Error::UnexpectedMessage(message) => match status_code(message) {
            Some(code) => classify_code(code, e),
            // The connection broke while rows streamed (Neo4j went away mid-query): another
            // connection, once it is back, succeeds.
            None if message.contains("IOError") => GraphError::Unavailable(e.to_string()),
            None => GraphError::Query(e.to_string()),
        },
        neo4rs::Error::UrlParseError(_)
        | neo4rs::Error::UnsupportedScheme(_)
        | neo4rs::Error::InvalidDnsName(_)
        | neo4rs::Error::InvalidConfig
        | neo4rs::Error::AuthenticationError(_) => GraphError::Config(e.to_string()),
        neo4rs::Error::DeserializationError(_) | neo4rs::Error::ConversionError => GraphError::Corrupt(e.to_string()),
        _ => GraphError::Query(e.to_string()),
    }
}

/// Classifies by Neo4j status code (`Neo.{Classification}.{Category}.{Title}`).
fn classify_code(code: &str, e: &neo4rs::Error) -> GraphError {
    if code.starts_with("Neo.TransientError.Transaction.") {
        // Deadlocks, lock timeouts, terminated-by-conflict: the transaction lost a race.
        GraphError::Conflict(e.to_string())
    } else if code.starts_with("Neo.TransientError.")
        || code.starts_with("Neo.ClientError.Cluster.")
        || code.starts_with("Neo.ClientError.Request.")
    {
        // Request errors are about the Bolt exchange, not the data (under load neo4rs has been
        // seen to PULL a statement the server had already dropped: `No such statement`); a new
        // transaction on another connection succeeds.
        GraphError::Unavailable(e.to_string())
    } else if code.starts_with("Neo.ClientError.Security.") {
        GraphError::Config(e.to_string())
    } else {
        GraphError::Query(e.to_string())
    }
}

/// The first Neo4j status code (`Neo.…`) in a message.
fn status_code(message: &str) -> Option<&str> {
    let start = message.find("Neo.")?;
    let rest = &message[start..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn get<T: serde::de::DeserializeOwned>(row: &neo4rs::Row, column: &str) -> Result<T, GraphError> {
    row.get::<T>(column).map_err(|e| GraphError::Corrupt(format!("column {column}: {e}")))
}

/// Runs a query in the transaction and reads every row.
async fn rows(txn: &mut Txn, query: Query) -> Result<Vec<neo4rs::Row>, GraphError> {
    let mut stream = txn.execute(query).await.map_err(|e| classify(&e))?;
    let mut out = Vec::new();
    while let Some(row) = stream.next(txn.handle()).await.map_err(|e| classify(&e))? {
        out.push(row);
    }
    Ok(out)
}

fn schema_statements() -> Vec<String> {
    let mut out: Vec<String> = Label::ALL
        .into_iter()
        .map(|l| {
            let props = match l.key_props() {
                [one] => format!("n.{one}"),
                many => format!("({})", many.iter().map(|p| format!("n.{p}")).collect::<Vec<_>>().join(", ")),
            };
            let name = format!("etter_{}_key", l.as_str().to_lowercase());
            format!("CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{l}) REQUIRE {props} IS UNIQUE")
        })
        .collect();
    // Role-scoped lookups (`{role_id: $role}`) by the first key alone: a composite constraint
    // index is not used for a prefix of its properties.
    out.extend(Label::ALL.into_iter().filter(|l| l.is_role_scoped() && l.key_props().len() > 1).map(|l| {
        format!("CREATE INDEX etter_{}_role IF NOT EXISTS FOR (n:{l}) ON (n.role_id)", l.as_str().to_lowercase())
    }));
    out.extend(Rel::ALL.into_iter().filter(|r| r.owner() == Owner::Prop).map(|r| {
        format!("CREATE INDEX etter_{}_role IF NOT EXISTS FOR ()-[r:{r}]-() ON (r.role_id)", r.as_str().to_lowercase())
    }));
    out
}

/// `{p0: src[0], p1: src[1]}`: the key map of a label, from a list expression.
fn key_map(label: Label, src: &str) -> String {
    let entries: Vec<String> = label.key_props().iter().enumerate().map(|(i, p)| format!("{p}: {src}[{i}]")).collect();
    format!("{{{}}}", entries.join(", "))
}

/// `[v.p0, v.p1]`: a node's key as a list, comparable with the plan's keys.
fn key_list(label: Label, var: &str) -> String {
    let entries: Vec<String> = label.key_props().iter().map(|p| format!("{var}.{p}")).collect();
    format!("[{}]", entries.join(", "))
}

/// `{p: src.p}` of a relationship type's identifying properties, or nothing.
fn ident_map(rel: Rel, src: &str) -> String {
    if rel.ident_props().is_empty() {
        return String::new();
    }
    let entries: Vec<String> = rel.ident_props().iter().map(|p| format!("{p}: {src}.{p}")).collect();
    format!(" {{{}}}", entries.join(", "))
}

/// `MATCH (a)-[r]->(b)` restricted to the relationships of `rel` that role `$role` owns.
fn owned_match(rel: Rel) -> String {
    let (from, to) = rel.endpoints();
    match rel.owner() {
        Owner::From => format!("MATCH (a:{from} {{role_id: $role}})-[r:{rel}]->(b:{to})"),
        Owner::To => format!("MATCH (a:{from})-[r:{rel}]->(b:{to} {{role_id: $role}})"),
        Owner::Prop => format!("MATCH (a:{from})-[r:{rel} {{role_id: $role}}]->(b:{to})"),
    }
}

fn keep_expr(rel: Rel, keep: &Keep) -> (String, BoltType) {
    let (from, to) = rel.endpoints();
    match keep {
        Keep::Pairs(pairs) => (
            format!("[{}, {}]", key_list(from, "a"), key_list(to, "b")),
            BoltType::from(
                pairs
                    .iter()
                    .map(|(f, t)| BoltType::from(vec![BoltType::from(f.clone()), BoltType::from(t.clone())]))
                    .collect::<Vec<_>>(),
            ),
        ),
        Keep::Targets(keys) => (key_list(to, "b"), BoltType::from(keys.clone())),
        Keep::Sources(keys) => (key_list(from, "a"), BoltType::from(keys.clone())),
    }
}

fn bolt(value: &PropValue) -> BoltType {
    match value {
        PropValue::Bool(b) => BoltType::from(*b),
        PropValue::Int(i) => BoltType::from(*i),
        PropValue::Float(x) => BoltType::from(*x),
        PropValue::Str(s) => BoltType::from(s.as_str()),
    }
}

fn bolt_props(props: &Props) -> BoltType {
    BoltType::from(props.iter().map(|(k, v)| (k.clone(), bolt(v))).collect::<HashMap<String, BoltType>>())
}

fn node_row(row: &NodeRow) -> BoltType {
    BoltType::from(HashMap::from([
        ("key".to_owned(), BoltType::from(row.key.clone())),
        ("set".to_owned(), bolt_props(&row.set)),
        ("init".to_owned(), bolt_props(&row.init)),
    ]))
}

fn edge_row(row: &EdgeRow) -> BoltType {
    BoltType::from(HashMap::from([
        ("from".to_owned(), BoltType::from(row.from.clone())),
        ("to".to_owned(), BoltType::from(row.to.clone())),
        ("ident".to_owned(), bolt_props(&row.ident)),
        ("set".to_owned(), bolt_props(&row.set)),
    ]))
}

fn missing(step: &'static str, what: String) -> GraphError {
    GraphError::MissingReference { step, missing: what }
}

/// The first row whose relationship (or endpoint) is missing, as a pattern for the error.
async fn first_missing(txn: &mut Txn, query: Query, rel: Rel) -> Result<Option<String>, GraphError> {
    let (from, to) = rel.endpoints();
    let found = rows(txn, query).await?;
    let Some(row) = found.first() else { return Ok(None) };
    let a = NodeRef { label: from, key: get(row, "from")? };
    let b = NodeRef { label: to, key: get(row, "to")? };
    Ok(Some(format!("{a}-[:{rel}]->{b}")))
}

async fn run_op(txn: &mut Txn, step: &'static str, op: &Op) -> Result<(), GraphError> {
    match op {
        Op::RequireNode(node) => {
            let q = format!("MATCH (n:{} {}) RETURN count(n) AS n", node.label, key_map(node.label, "$key"));
            let found = rows(txn, neo4rs::query(&q).param("key", node.key.clone())).await?;
            let n: i64 = found.first().map(|r| get(r, "n")).transpose()?.unwrap_or(0);
            if n == 0 {
                return Err(missing(step, node.to_string()));
            }
        }
        Op::MergeNodes { label, rows: node_rows } => {
            if node_rows.is_empty() {
                return Ok(());
            }
            // `init` may only fill absent properties: apply it, then put back what was there
            // before, then apply `set`.
            let q = format!(
                "UNWIND $rows AS row MERGE (n:{label} {}) \
                 WITH n, row, properties(n) AS before SET n += row.init SET n += before SET n += row.set",
                key_map(*label, "row.key")
            );
            let rows_param = node_rows.iter().map(node_row).collect::<Vec<_>>();
            txn.run(neo4rs::query(&q).param("rows", rows_param)).await.map_err(|e| classify(&e))?;
        }
        Op::MergeEdges { rel, rows: edge_rows } => {
            if edge_rows.is_empty() {
                return Ok(());
            }
            let (from, to) = rel.endpoints();
            let rows_param = edge_rows.iter().map(edge_row).collect::<Vec<_>>();
            // One round trip: merge the rows whose endpoints exist, report the first that has a
            // missing endpoint (the caller then rolls the whole transaction back).
            let q = format!(
                "UNWIND $rows AS row OPTIONAL MATCH (a:{from} {}) OPTIONAL MATCH (b:{to} {}) \
                 FOREACH (_ IN CASE WHEN a IS NULL OR b IS NULL THEN [] ELSE [1] END | \
                   MERGE (a)-[r:{rel}{}]->(b) SET r += row.set) \
                 WITH row, a, b WHERE a IS NULL OR b IS NULL RETURN row.from AS from, row.to AS to LIMIT 1",
                key_map(from, "row.from"),
                key_map(to, "row.to"),
                ident_map(*rel, "row.ident")
            );
            if let Some(what) = first_missing(txn, neo4rs::query(&q).param("rows", rows_param), *rel).await? {
                return Err(missing(step, what));
            }
        }
        Op::RequireEdges { rel, rows: edge_rows } => {
            if edge_rows.is_empty() {
                return Ok(());
            }
            let (from, to) = rel.endpoints();
            let q = format!(
                "UNWIND $rows AS row OPTIONAL MATCH (a:{from} {})-[r:{rel}{}]->(b:{to} {}) \
                 WITH row, r WHERE r IS NULL RETURN row.from AS from, row.to AS to LIMIT 1",
                key_map(from, "row.from"),
                ident_map(*rel, "row.ident"),
                key_map(to, "row.to")
            );
            let rows_param = edge_rows.iter().map(edge_row).collect::<Vec<_>>();
            if let Some(what) = first_missing(txn, neo4rs::query(&q).param("rows", rows_param), *rel).await? {
                return Err(missing(step, what));
            }
        }
        Op::DeleteNodes { label, role, keep } => {
            let q = format!(
                "MATCH (n:{label} {{role_id: $role}}) WHERE NOT {} IN $keep DETACH DELETE n",
                key_list(*label, "n")
            );
            txn.run(neo4rs::query(&q).param("role", role.as_str()).param("keep", keep.clone()))
                .await
                .map_err(|e| classify(&e))?;
        }
        Op::DeleteEdges { rel, role, keep } => {
            let (expr, keep) = keep_expr(*rel, keep);
            let q = format!("{} WHERE NOT {expr} IN $keep DELETE r", owned_match(*rel));
            txn.run(neo4rs::query(&q).param("role", role.as_str()).param("keep", keep))
                .await
                .map_err(|e| classify(&e))?;
        }
        Op::RemoveEdgeProps { rel, role, props, keep } => {
            let (expr, keep) = keep_expr(*rel, keep);
            let removed = props.iter().map(|p| format!("r.{p}")).collect::<Vec<_>>().join(", ");
            let q = format!("{} WHERE NOT {expr} IN $keep REMOVE {removed}", owned_match(*rel));
            txn.run(neo4rs::query(&q).param("role", role.as_str()).param("keep", keep))
                .await
                .map_err(|e| classify(&e))?;
        }
        Op::DeleteNode(node) => {
            let q = format!("MATCH (n:{} {}) DETACH DELETE n", node.label, key_map(node.label, "$key"));
            txn.run(neo4rs::query(&q).param("key", node.key.clone())).await.map_err(|e| classify(&e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadlock_while_streaming_rows_is_a_retryable_conflict() {
        // The shape neo4rs gives a failure in PULL (seen in the conformance suite).
        let e = neo4rs::Error::UnexpectedMessage(
            "unexpected response for PULL: Ok(Failure(Failure { metadata: BoltMap { value: {BoltString { value: \
             \"code\" }: String(BoltString { value: \"Neo.TransientError.Transaction.DeadlockDetected\" })} } }))"
                .to_owned(),
        );
        let classified = classify(&e);
        assert!(matches!(classified, GraphError::Conflict(_)), "{classified:?}");
        assert!(classified.is_retryable());
        let e = neo4rs::Error::UnexpectedMessage("unexpected response for PULL: Ok(Ignored)".to_owned());
        assert!(matches!(classify(&e), GraphError::Query(_)));
        assert!(matches!(classify(&neo4rs::Error::ConnectionError), GraphError::Unavailable(_)));
        // Seen when Neo4j was killed while a query's rows streamed.
        let broken = neo4rs::Error::UnexpectedMessage(
            "unexpected response for PULL: Err(IOError { detail: Kind(UnexpectedEof) })".to_owned(),
        );
        assert!(matches!(classify(&broken), GraphError::Unavailable(_)));
        // Seen with 270 concurrent runs: a protocol-level refusal, retryable.
        let e = neo4rs::Error::UnexpectedMessage(
            "unexpected response for PULL: Ok(Failure(Failure { metadata: BoltMap { value: {BoltString { value: \
             \"code\" }: String(BoltString { value: \"Neo.ClientError.Request.InvalidFormat\" })} } }))"
                .to_owned(),
        );
        assert!(classify(&e).is_retryable(), "{:?}", classify(&e));
    }

    #[test]
    fn generated_cypher_names_only_schema_identifiers() {
        assert_eq!(key_map(Label::Task, "row.key"), "{role_id: row.key[0], key: row.key[1]}");
        assert_eq!(key_list(Label::Skill, "b"), "[b.key]");
        assert_eq!(ident_map(Rel::ReskillsTo, "row.ident"), " {role_id: row.ident.role_id}");
        assert_eq!(owned_match(Rel::HasRole), "MATCH (a:Company)-[r:HAS_ROLE]->(b:CompanyRole {role_id: $role})");
        let schema = schema_statements();
        assert!(schema.iter().any(|s| s.contains("FOR (n:Task) REQUIRE (n.role_id, n.key) IS UNIQUE")), "{schema:?}");
        assert!(schema.iter().any(|s| s.contains("FOR (n:Skill) REQUIRE n.key IS UNIQUE")), "{schema:?}");
    }
}
