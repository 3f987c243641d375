//! The graph's schema as data: node labels with their stable keys, relationship types with their
//! endpoints and owner, and property values. Both backends are driven from these tables, so the
//! Neo4j constraints, the Cypher, the SQLite primary keys and the snapshot all agree by
//! construction (see `docs/graph.md`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node label. Every node has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Label {
    /// A client company.
    Company,
    /// A company's job role; owns every role-scoped node and relationship.
    CompanyRole,
    /// A role of Draup's global taxonomy.
    DraupRole,
    /// A document, by content hash (global: identical bytes are one document).
    Document,
    /// A task of one role (role-scoped).
    Task,
    /// A task name of the standard taxonomy (global vocabulary).
    StandardTask,
    /// A skill (global vocabulary: `python` is the same skill in every role).
    Skill,
    /// A cluster of the skills architecture of one role (role-scoped).
    SkillCluster,
}

impl Label {
    /// Every label, in a fixed order.
    pub const ALL: [Label; 8] = [
        Label::Company,
        Label::CompanyRole,
        Label::DraupRole,
        Label::Document,
        Label::Task,
        Label::StandardTask,
        Label::Skill,
        Label::SkillCluster,
    ];

    /// The label as Neo4j and the embedded tables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Company => "Company",
            Label::CompanyRole => "CompanyRole",
            Label::DraupRole => "DraupRole",
            Label::Document => "Document",
            Label::Task => "Task",
            Label::StandardTask => "StandardTask",
            Label::Skill => "Skill",
            Label::SkillCluster => "SkillCluster",
        }
    }

    /// Parses a label read back from a store.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == value)
    }

    /// The properties that identify a node (its uniqueness constraint), in order. Role-scoped
    /// labels start with `role_id`, which is how ownership is found in both backends.
    pub fn key_props(self) -> &'static [&'static str] {
        match self {
            Label::Company => &["company_id"],
            Label::CompanyRole => &["role_id"],
            Label::DraupRole => &["draup_role_id"],
            Label::Document => &["content_hash"],
            Label::Task | Label::SkillCluster => &["role_id", "key"],
            Label::StandardTask | Label::Skill => &["key"],
        }
    }

    /// Whether nodes of this label belong to one role (and are deleted with it) rather than
    /// being shared vocabulary.
    pub fn is_role_scoped(self) -> bool {
        matches!(self, Label::CompanyRole | Label::Task | Label::SkillCluster)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which role owns a relationship: the role whose re-run may replace or delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The `role_id` of the start node.
    From,
    /// The `role_id` of the end node.
    To,
    /// The relationship's own `role_id` property (between two vocabulary nodes).
    Prop,
}

/// A relationship type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rel {
    /// `(Company)-[:HAS_ROLE]->(CompanyRole)`.
    HasRole,
    /// `(CompanyRole)-[:MAPS_TO]->(DraupRole)`.
    MapsTo,
    /// `(CompanyRole)-[:HAS_DOCUMENT {doc_type, uri}]->(Document)`.
    HasDocument,
    /// `(CompanyRole)-[:PERFORMS {automation, augmentation, confidence, source_*, feasibility?}]->(Task)`.
    Performs,
    /// `(Task)-[:FROM_DOCUMENT]->(Document)`.
    FromDocument,
    /// `(CompanyRole)-[:TOP_TASK {rank}]->(Task)`.
    TopTask,
    /// `(Task)-[:STANDARDIZED_AS {standard_name}]->(StandardTask)`.
    StandardizedAs,
    /// `(CompanyRole)-[:REQUIRES {name, confidence, source_*, proficiency?, description?}]->(Skill)`.
    Requires,
    /// `(CompanyRole)-[:HAS_CLUSTER]->(SkillCluster)`.
    HasCluster,
    /// `(SkillCluster)-[:CONTAINS]->(Skill)`.
    Contains,
    /// `(Skill)-[:RESKILLS_TO {role_id, rationale}]->(Skill)`.
    ReskillsTo,
}

impl Rel {
    /// Every relationship type, in a fixed order.
    pub const ALL: [Rel; 11] = [
        Rel::HasRole,
        Rel::MapsTo,
        Rel::HasDocument,
        Rel::Performs,
        Rel::FromDocument,
        Rel::TopTask,
        Rel::StandardizedAs,
        Rel::Requires,
        Rel::HasCluster,
        Rel::Contains,
        Rel::ReskillsTo,
    ];

    /// The type as Neo4j and the embedded tables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rel::HasRole => "HAS_ROLE",
            Rel::MapsTo => "MAPS_TO",
            Rel::HasDocument => "HAS_DOCUMENT",
            Rel::Performs => "PERFORMS",
            Rel::FromDocument => "FROM_DOCUMENT",
            Rel::TopTask => "TOP_TASK",
            Rel::StandardizedAs => "STANDARDIZED_AS",
            Rel::Requires => "REQUIRES",
            Rel::HasCluster => "HAS_CLUSTER",
            Rel::Contains => "CONTAINS",
            Rel::ReskillsTo => "RESKILLS_TO",
        }
    }

    /// Parses a type read back from a store.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }

    /// The labels of the start and end node.
    pub fn endpoints(self) -> (Label, Label) {
        match self {
            Rel::HasRole => (Label::Company, Label::CompanyRole),
            Rel::MapsTo => (Label::CompanyRole, Label::DraupRole),
            Rel::HasDocument => (Label::CompanyRole, Label::Document),
            Rel::Performs | Rel::TopTask => (Label::CompanyRole, Label::Task),
            Rel::FromDocument => (Label::Task, Label::Document),
            Rel::StandardizedAs => (Label::Task, Label::StandardTask),
            Rel::Requires => (Label::CompanyRole, Label::Skill),
            Rel::HasCluster => (Label::CompanyRole, Label::SkillCluster),
            Rel::Contains => (Label::SkillCluster, Label::Skill),
            Rel::ReskillsTo => (Label::Skill, Label::Skill),
        }
    }

    /// Which role owns a relationship of this type.
    pub(crate) fn owner(self) -> Owner {
        match self {
            Rel::HasRole => Owner::To,
            Rel::ReskillsTo => Owner::Prop,
            _ => Owner::From,
        }
    }

    /// Properties that, with the two endpoints, identify a relationship: two roles may both
    /// say "sql reskills to data-modelling", each with its own rationale.
    pub fn ident_props(self) -> &'static [&'static str] {
        match self {
            Rel::ReskillsTo => &["role_id"],
            _ => &[],
        }
    }
}

impl fmt::Display for Rel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A property value. The graph stores only these four kinds; all are exact in both backends
/// (floats are IEEE doubles in Bolt and in the embedded JSON, parsed with round-trip precision).
///
/// Stored as the bare JSON value. It is read by a visitor of its own rather than
/// `#[serde(untagged)]`, which buffers every value and formats an error for each kind it rules
/// out: that was most of the cost of reading a role's outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PropValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A string.
    Str(String),
}

impl<'de> Deserialize<'de> for PropValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PropVisitor)
    }
}

struct PropVisitor;

impl serde::de::Visitor<'_> for PropVisitor {
    type Value = PropValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, an integer, a number or a string")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PropValue, E> {
        Ok(PropValue::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PropValue, E> {
        Ok(PropValue::Int(v))
    }

    /// Beyond `i64` an integer is kept as the nearest double, as the untagged form did.
    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PropValue, E> {
        Ok(i64::try_from(v).map_or(PropValue::Float(v as f64), PropValue::Int))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PropValue, E> {
        Ok(PropValue::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PropValue, E> {
        Ok(PropValue::Str(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PropValue, E> {
        Ok(PropValue::Str(v))
    }
}

impl PropValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PropValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for PropValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropValue::Bool(b) => write!(f, "{b}"),
            PropValue::Int(i) => write!(f, "{i}"),
            PropValue::Float(x) => write!(f, "{x:?}"),
            PropValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<bool> for PropValue {
    fn from(value: bool) -> Self {
        PropValue::Bool(value)
    }
}
impl From<i64> for PropValue {
    fn from(value: i64) -> Self {
        PropValue::Int(value)
    }
}
impl From<u32> for PropValue {
    fn from(value: u32) -> Self {
        PropValue::Int(i64::from(value))
    }
}
impl From<u8> for PropValue {
    fn from(value: u8) -> Self {
        PropValue::Int(i64::from(value))
    }
}
impl From<f64> for PropValue {
    fn from(value: f64) -> Self {
        PropValue::Float(value)
    }
}
impl From<&str> for PropValue {
    fn from(value: &str) -> Self {
        PropValue::Str(value.to_owned())
    }
}
impl From<String> for PropValue {
    fn from(value: String) -> Self {
        PropValue::Str(value)
    }
}

/// Properties of a node or relationship, sorted by name.
pub type Props = BTreeMap<String, PropValue>;

/// A node's identity: its label and the values of its key properties, in
/// [`Label::key_props`] order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// The label.
    pub label: Label,
    /// The key values.
    pub key: Vec<String>,
}

impl NodeRef {
    /// A node of `label` with these key values.
    pub fn new(label: Label, key: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { label, key: key.into_iter().map(Into::into).collect() }
    }

    /// The identity of a node from its stored properties, or `None` if a key property is
    /// missing or not a string.
    pub fn from_props(label: Label, props: &Props) -> Option<Self> {
        let key = label
            .key_props()
            .iter()
            .map(|p| props.get(*p).and_then(PropValue::as_str).map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Self { label, key })
    }

    /// The key properties as a property map.
    pub fn key_props(&self) -> Props {
        self.label
            .key_props()
            .iter()
            .zip(&self.key)
            .map(|(p, v)| ((*p).to_owned(), PropValue::from(v.as_str())))
            .collect()
    }

    /// The role this node belongs to, if it is role-scoped (`role_id` is its first key).
    pub fn role_id(&self) -> Option<&str> {
        if self.label.is_role_scoped() { self.key.first().map(String::as_str) } else { None }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(:{} {{", self.label)?;
        for (i, (p, v)) in self.label.key_props().iter().zip(&self.key).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}: {v:?}")?;
        }
        f.write_str("})")
    }
}

#[cfg(test)]
mod tests {
    use super::{PropValue, Props};

    #[test]
    fn prop_values_read_back_as_the_kind_they_were_written() -> serde_json::Result<()> {
        let props: Props = [
            ("flag", PropValue::Bool(true)),
            ("count", PropValue::Int(-42)),
            ("whole_double", PropValue::Float(3.0)),
            ("share", PropValue::Float(0.1 + 0.2)),
            ("name", PropValue::Str("Software \"Engineer\" ✓".to_owned())),
            ("numeric_text", PropValue::Str("17".to_owned())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let text = serde_json::to_string(&props)?;
        let back: Props = serde_json::from_str(&text)?;
        assert_eq!(back, props, "stored as {text}");
        Ok(())
    }

    #[test]
    fn integers_beyond_i64_become_doubles_and_other_json_is_refused() -> serde_json::Result<()> {
        let big: PropValue = serde_json::from_str("18446744073709551615")?;
        assert_eq!(big, PropValue::Float(18_446_744_073_709_551_615_f64));
        for refused in ["null", "[1]", "{\"a\":1}"] {
            let read = serde_json::from_str::<PropValue>(refused);
            let error = read.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains("a boolean, an integer, a number or a string"), "{refused}: {error:?}");
        }
        Ok(())
    }
}
