//! Identifiers, parsed once at the edge and carried as types afterwards.
//!
//! A *role* is `(company_id, role_name)`; its [`RoleId`] is `cr-{company_id}.{slug(role_name)}`
//! (for example `cr-liberty.claims-adjuster`). A *run* is one execution of the pipeline for a
//! role; its [`WorkflowId`] `role-onboard-{role_id}-{n}` is also its Temporal workflow id.
//!
//! Company ids and slugs both contain hyphens but never a dot, so the dot splits a role id in
//! exactly one way: two companies can never derive the same role id. Roles stored before the dot
//! (`cr-{company_id}-{slug}`, ambiguous when a company id has a hyphen) keep their ids, and the
//! run store still finds them by company and name ([`RoleId::legacy`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier. The message names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {problem}")]
pub struct InvalidId {
    /// Which kind of identifier (`company_id`, `role_name`, …).
    pub what: &'static str,
    /// The rule it breaks.
    pub problem: String,
}

fn invalid(what: &'static str, problem: impl Into<String>) -> InvalidId {
    InvalidId { what, problem: problem.into() }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }
    };
}

string_id!(
    /// A client company: lowercase ASCII letters, digits and hyphens, 1–63 characters, starting
    /// with a letter or digit (for example `liberty`, `acme-insurance`).
    CompanyId
);
string_id!(
    /// A role's name as the company calls it: trimmed, 1–200 characters, no control characters.
    RoleName
);
string_id!(
    /// A role: `cr-{company_id}.{slug(role_name)}` (or, stored before the dot,
    /// `cr-{company_id}-{slug(role_name)}`).
    RoleId
);
string_id!(
    /// A run: `role-onboard-{role_id}-{n}`, also its Temporal workflow id.
    WorkflowId
);
string_id!(
    /// A batch of pushes: `batch-` followed by 1–64 lowercase hex digits or hyphens.
    BatchId
);
string_id!(
    /// A client's idempotency key for a mutating call: 1–128 printable ASCII characters.
    RequestId
);
string_id!(
    /// The W3C trace id of the request behind a run: 32 lowercase hex digits, not all zero. It
    /// travels from the request's `traceparent` header (or a fresh one) into the run, its
    /// workflow and its activities' log spans.
    TraceId
);
string_id!(
    /// The W3C `traceparent` of the request span that created a run
    /// (`00-{trace id}-{span id}-{flags}`): the dispatcher's span continues it, so the run's
    /// workflow and activities sit in that request's trace.
    TraceParent
);
string_id!(
    /// A Draup role a company role maps to (for example `draup-role-12345`): 1–128 printable
    /// ASCII characters without spaces.
    DraupRoleId
);

/// Longest company id.
pub const MAX_COMPANY_ID_LEN: usize = 63;
/// Longest role name, in characters.
pub const MAX_ROLE_NAME_CHARS: usize = 200;
const ROLE_PREFIX: &str = "cr-";
const WORKFLOW_PREFIX: &str = "role-onboard-";

fn printable_ascii(what: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(invalid(what, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(what, format!("must be at most {max} characters")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(what, "must be printable ASCII without spaces"));
    }
    Ok(())
}

impl CompanyId {
    /// Parses a company id.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "company_id";
        if value.is_empty() {
            return Err(invalid(WHAT, "must not be empty"));
        }
        if value.len() > MAX_COMPANY_ID_LEN {
            return Err(invalid(WHAT, format!("must be at most {MAX_COMPANY_ID_LEN} characters")));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid(WHAT, "may contain only lowercase letters, digits and hyphens"));
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(invalid(WHAT, "must not start or end with a hyphen"));
        }
        Ok(Self(value.to_owned()))
    }
}

impl RoleName {
    /// Parses a role name; surrounding whitespace is trimmed, inner runs of whitespace collapse
    /// to one space, so "Claims  Adjuster " and "Claims Adjuster" are the same role.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "role_name";
        let normalized = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalized.is_empty() {
            return Err(invalid(WHAT, "must not be empty"));
        }
        if normalized.chars().count() > MAX_ROLE_NAME_CHARS {
            return Err(invalid(WHAT, format!("must be at most {MAX_ROLE_NAME_CHARS} characters")));
        }
        if normalized.chars().any(char::is_control) {
            return Err(invalid(WHAT, "must not contain control characters"));
        }
        if let Some(c) = normalized.chars().find(|c| is_invisible_format(*c)) {
            return Err(invalid(
                WHAT,
                format!(
                    "must not contain invisible formatting characters (found U+{:04X}): bidirectional overrides and \
                     zero-width characters make a name show as something it is not",
                    u32::from(c)
                ),
            ));
        }
        if slug(&normalized).is_empty() {
            return Err(invalid(WHAT, "must contain at least one letter or digit"));
        }
        Ok(Self(normalized))
    }
}

/// Whether `c` is an invisible formatting character (Unicode category Cf and its kin): the
/// bidirectional embeddings, overrides, isolates and marks, zero-width spaces and joiners, word
/// joiners, invisible operators, the byte order mark, soft hyphens, interlinear annotation and
/// tag characters, and variation selectors. Shown on screen they reorder or hide text, so a
/// name holding them may read as another name.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// The URL- and id-safe form of a role name: lowercase ASCII letters and digits, every other run
/// of characters becomes one hyphen, no leading or trailing hyphen. Letters with diacritics keep
/// their base letter (`Ingénieur` → `ingenieur`).
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_hyphen = false;
    for c in name.chars().flat_map(fold_diacritic) {
        if c.is_ascii_alphanumeric() {
            if pending_hyphen && !out.is_empty() {
                out.push('-');
            }
            pending_hyphen = false;
            out.push(c.to_ascii_lowercase());
        } else if c == '+' {
            // "C++ Developer" must not collide with "C Developer".
            if pending_hyphen && !out.is_empty() {
                out.push('-');
            }
            pending_hyphen = true;
            out.push_str("plus");
        } else {
            pending_hyphen = true;
        }
    }
    out
}

/// The ASCII base letter(s) of common Latin letters with diacritics; other characters unchanged.
fn fold_diacritic(c: char) -> impl Iterator<Item = char> {
    let folded: &str = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => "a",
        'æ' | 'Æ' => "ae",
        'ç' | 'Ç' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
        'ñ' | 'Ñ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => "o",
        'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
        'ý' | 'ÿ' | 'Ý' => "y",
        'ß' => "ss",
        _ => "",
    };
    let mut buf = [None, None];
    if folded.is_empty() {
        buf[0] = Some(c);
    } else {
        for (slot, f) in buf.iter_mut().zip(folded.chars()) {
            *slot = Some(f);
        }
    }
    buf.into_iter().flatten()
}

impl RoleId {
    /// The id of a company's role.
    pub fn new(company: &CompanyId, name: &RoleName) -> Self {
        Self(format!("{ROLE_PREFIX}{company}.{}", slug(name.as_str())))
    }

    /// The id the same role was given before ids had a dot: `cr-{company}-{slug}`. Only the run
    /// store uses it, to find roles stored then (their runs keep their ids); nothing new is ever
    /// given such an id.
    pub fn legacy(company: &CompanyId, name: &RoleName) -> Self {
        Self(format!("{ROLE_PREFIX}{company}-{}", slug(name.as_str())))
    }

    /// Whether this is the id of `company`'s role `name`, in either form.
    pub fn is_of(&self, company: &CompanyId, name: &RoleName) -> bool {
        *self == Self::new(company, name) || *self == Self::legacy(company, name)
    }

    /// Whether this id has the form roles were given before ids had a dot.
    pub fn is_legacy(&self) -> bool {
        !self.0.contains('.')
    }

    /// Parses a role id received from a client (shape only; whether it exists is the store's
    /// business).
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "role_id";
        let rest = value.strip_prefix(ROLE_PREFIX).ok_or_else(|| invalid(WHAT, "must start with `cr-`"))?;
        if rest.is_empty() || rest.len() > 300 {
            return Err(invalid(WHAT, "must be `cr-{company_id}.{role slug}`"));
        }
        if !rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
            return Err(invalid(WHAT, "may contain only lowercase letters, digits, hyphens and one dot"));
        }
        match rest.split_once('.') {
            Some((company, slug)) if company.is_empty() || slug.is_empty() || slug.contains('.') => {
                Err(invalid(WHAT, "must be `cr-{company_id}.{role slug}`"))
            }
            _ => Ok(Self(value.to_owned())),
        }
    }

    /// The company part of an id in the current form (`None` for a legacy id, whose split is
    /// ambiguous).
    pub fn company_part(&self) -> Option<&str> {
        self.0.strip_prefix(ROLE_PREFIX)?.split_once('.').map(|(company, _)| company)
    }
}

impl CompanyId {
    /// How every workflow id of this company's runs starts, in the current form and in the
    /// legacy one (which the runs of other companies whose ids extend this one share: a filter
    /// on these prefixes may let through a few of theirs, never miss one of this company's).
    pub fn workflow_prefixes(&self) -> [String; 2] {
        [format!("{WORKFLOW_PREFIX}{ROLE_PREFIX}{self}."), format!("{WORKFLOW_PREFIX}{ROLE_PREFIX}{self}-")]
    }
}

impl WorkflowId {
    /// The workflow id of run `n` (1-based) of a role.
    pub fn for_run(role: &RoleId, n: u32) -> Self {
        Self(format!("{WORKFLOW_PREFIX}{role}-{n}"))
    }

    /// Parses a workflow id received from a client.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "workflow_id";
        let rest =
            value.strip_prefix(WORKFLOW_PREFIX).ok_or_else(|| invalid(WHAT, "must start with `role-onboard-`"))?;
        let (role, n) = rest.rsplit_once('-').ok_or_else(|| invalid(WHAT, "must end with `-{run number}`"))?;
        RoleId::parse(role).map_err(|e| invalid(WHAT, format!("has an invalid role part: {}", e.problem)))?;
        match n.parse::<u32>() {
            // Canonical numbers only: `-01` would name the same run as `-1`.
            Ok(num) if num >= 1 && num.to_string() == n => Ok(Self(value.to_owned())),
            _ => Err(invalid(WHAT, "must end with `-{run number}` (1, 2, …)")),
        }
    }

    /// The role part and run number.
    pub fn split(&self) -> (RoleId, u32) {
        let rest = self.0.strip_prefix(WORKFLOW_PREFIX).unwrap_or(&self.0);
        let (role, n) = rest.rsplit_once('-').unwrap_or((rest, "1"));
        (RoleId(role.to_owned()), n.parse().unwrap_or(1))
    }
}

impl BatchId {
    /// A new batch id from 128 bits of the caller's randomness, rendered as hex.
    pub fn from_random(bits: u128) -> Self {
        Self(format!("batch-{bits:032x}"))
    }

    /// Parses a batch id received from a client.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "batch_id";
        let rest = value.strip_prefix("batch-").ok_or_else(|| invalid(WHAT, "must start with `batch-`"))?;
        if rest.is_empty() || rest.len() > 64 || !rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(invalid(WHAT, "must be `batch-` followed by hex digits"));
        }
        Ok(Self(value.to_owned()))
    }
}

impl RequestId {
    /// Parses a client's request id.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        printable_ascii("request_id", value, 128)?;
        Ok(Self(value.to_owned()))
    }
}

impl DraupRoleId {
    /// Parses a Draup role id.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        printable_ascii("draup_role_id", value, 128)?;
        Ok(Self(value.to_owned()))
    }
}

impl TraceId {
    /// Parses a trace id: 32 lowercase hex digits, not all zero (W3C Trace Context).
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "trace_id";
        if value.len() != 32 || !value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(WHAT, "must be 32 lowercase hex digits"));
        }
        if value.bytes().all(|b| b == b'0') {
            return Err(invalid(WHAT, "must not be all zeros"));
        }
        Ok(Self(value.to_owned()))
    }

    /// A trace id from 128 bits of the caller's randomness (zero bits become 1).
    pub fn from_random(bits: u128) -> Self {
        Self(format!("{:032x}", bits.max(1)))
    }

    /// The trace id of a W3C `traceparent` header
    /// (`{version}-{trace id}-{parent id}-{flags}`), if the header is well formed.
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        // Version ff is forbidden; a version 00 header has exactly four parts, later versions may add some.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(parent, 16) || parent.bytes().all(|b| b == b'0') || !hex(flags, 2) {
            return None;
        }
        Self::parse(trace).ok()
    }

    /// A `traceparent` header value that continues this trace from `parent` (16 hex digits of
    /// the caller's span id), sampled.
    pub fn traceparent(&self, parent: u64) -> String {
        format!("00-{}-{:016x}-01", self.0, parent.max(1))
    }
}

impl TraceParent {
    /// Parses a version 00 `traceparent`: `00-{32 hex trace id}-{16 hex span id}-{2 hex flags}`,
    /// lowercase, neither id all zeros.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "traceparent";
        match TraceId::from_traceparent(value) {
            Some(_) if value.starts_with("00-") && value.len() == 55 => Ok(Self(value.to_owned())),
            _ => Err(invalid(WHAT, "must be `00-{32 hex digits}-{16 hex digits}-{2 hex digits}`, ids not all zeros")),
        }
    }

    /// The trace it continues.
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.0[3..35].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_trace_id_comes_from_a_well_formed_traceparent_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let header = format!("00-{id}-00f067aa0ba902b7-01");
        assert_eq!(TraceId::from_traceparent(&header).map(String::from).as_deref(), Some(id));
        // A later version may carry more fields.
        assert!(TraceId::from_traceparent(&format!("01-{id}-00f067aa0ba902b7-01-extra")).is_some());
        for bad in [
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7"),
            format!("00-{id}x-00f067aa0ba902b7-01"),
            String::new(),
        ] {
            assert_eq!(TraceId::from_traceparent(&bad), None, "{bad:?}");
        }
        let fresh = TraceId::from_random(0xabc);
        assert_eq!(fresh.as_str(), "00000000000000000000000000000abc");
        assert_eq!(TraceId::from_traceparent(&fresh.traceparent(7)), Some(fresh));
        assert!(TraceId::parse(&"0".repeat(32)).is_err());
        assert_eq!(TraceId::from_random(0).as_str(), "00000000000000000000000000000001");
    }

    #[test]
    fn a_traceparent_is_version_00_and_keeps_its_trace_id() -> Result<(), InvalidId> {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(header)?;
        assert_eq!(parent.as_str(), header);
        assert_eq!(parent.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn role_id_of_the_seed_example() -> Result<(), InvalidId> {
        let (liberty, name) = (CompanyId::parse("liberty")?, RoleName::parse("Claims Adjuster")?);
        let id = RoleId::new(&liberty, &name);
        assert_eq!(id.as_str(), "cr-liberty.claims-adjuster");
        assert_eq!(id.company_part(), Some("liberty"));
        let wf = WorkflowId::for_run(&id, 3);
        assert_eq!(wf.as_str(), "role-onboard-cr-liberty.claims-adjuster-3");
        assert_eq!(WorkflowId::parse(wf.as_str())?, wf);
        assert_eq!(wf.split(), (id.clone(), 3));
        // Ids stored before the dot still parse, and still name their role.
        let legacy = RoleId::parse("cr-liberty-claims-adjuster")?;
        assert!(legacy.is_legacy() && !id.is_legacy());
        assert_eq!(legacy, RoleId::legacy(&liberty, &name));
        assert!(legacy.is_of(&liberty, &name) && id.is_of(&liberty, &name));
        let legacy_run = WorkflowId::parse("role-onboard-cr-liberty-claims-adjuster-3")?;
        assert_eq!(legacy_run.split(), (legacy, 3));
        Ok(())
    }

    #[test]
    fn companies_whose_ids_extend_one_another_never_share_a_role_id() -> Result<(), InvalidId> {
        let acme = RoleId::new(&CompanyId::parse("acme")?, &RoleName::parse("Secret Plan")?);
        let acme_secret = RoleId::new(&CompanyId::parse("acme-secret")?, &RoleName::parse("Plan")?);
        assert_ne!(acme, acme_secret);
        assert_eq!((acme.company_part(), acme_secret.company_part()), (Some("acme"), Some("acme-secret")));
        for bad in ["cr-.plan", "cr-acme.", "cr-acme.plan.x", "cr-acme.Plan"] {
            assert!(RoleId::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn names_with_invisible_formatting_are_refused() {
        for name in [
            "Claims\u{202E}rotsujdA",
            "Claims\u{200B}Adjuster",
            "\u{2066}Analyst\u{2069}",
            "Ana\u{00AD}lyst",
            "\u{FEFF}Analyst",
        ] {
            let err = RoleName::parse(name).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("invisible formatting"), "{name:?}: {err}");
        }
        assert!(RoleName::parse("Ingénieur Qualité — Senior").is_ok(), "visible punctuation is fine");
    }

    #[test]
    fn role_names_normalise_and_slug() -> Result<(), InvalidId> {
        assert_eq!(RoleName::parse("  Claims   Adjuster ")?.as_str(), "Claims Adjuster");
        assert_eq!(slug("Ingénieur Qualité (Senior)"), "ingenieur-qualite-senior");
        assert_ne!(slug("C++ Developer"), slug("C Developer"));
        assert!(RoleName::parse("   ").is_err());
        assert!(RoleName::parse("???").is_err(), "a name without letters has no slug");
        assert!(RoleName::parse(&"x".repeat(201)).is_err());
        Ok(())
    }

    #[test]
    fn bad_ids_say_what_is_wrong() {
        let err = CompanyId::parse("Acme Corp").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("company_id may contain only"), "{err}");
        assert!(CompanyId::parse("-acme").is_err());
        assert!(WorkflowId::parse("role-onboard-cr-acme-x-0").is_err());
        assert!(WorkflowId::parse("role-onboard-cr-acme-x-01").is_err());
        assert!(WorkflowId::parse("wf-1").is_err());
        assert!(BatchId::parse("batch-xyz").is_err());
        assert!(RequestId::parse("has space").is_err());
        assert_eq!(BatchId::from_random(255).as_str(), "batch-000000000000000000000000000000ff");
    }

    proptest! {
        #[test]
        fn slugs_are_id_safe(name in "\\PC{0,80}") {
            let s = slug(&name);
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!s.starts_with('-') && !s.ends_with('-') && !s.contains("--"));
        }

        #[test]
        fn every_valid_role_gives_parseable_ids(company in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", name in "[A-Za-z0-9 ]{0,40}[A-Za-z][A-Za-z0-9 ]{0,40}", n in 1u32..10_000) {
            let company = CompanyId::parse(&company).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let name = RoleName::parse(&name).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let role = RoleId::new(&company, &name);
            prop_assert_eq!(RoleId::parse(role.as_str()).ok(), Some(role.clone()));
            prop_assert_eq!(role.company_part(), Some(company.as_str()));
            let wf = WorkflowId::for_run(&role, n);
            prop_assert_eq!(WorkflowId::parse(wf.as_str()).ok().map(|w| w.split()), Some((role, n)));
        }
    }
}
