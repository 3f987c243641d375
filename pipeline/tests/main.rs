//! The pipeline crate's integration tests: one binary, one module per concern. The conformance
//! suites run every implementation of a trait (PostgreSQL and SQLite, Neo4j and the embedded
//! graph) through the same cases, against the real services `scripts/services` starts.

mod documents;
mod graph_conformance;
mod llm;
mod store_conformance;
