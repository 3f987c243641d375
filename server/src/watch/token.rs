//! The `resume_token` of batch and company watches: the scope and every watched run's high-water
//! mark (the last sequence the client received), so a resumed stream sends exactly the events
//! after them — nothing missed, nothing repeated.
//!
//! The body is the scope (kind byte, length-prefixed id) and the marks sorted by workflow id,
//! each id front-coded against the previous one (shared prefix length, then the rest), with
//! LEB128 varints for numbers. Ids of one company share most of their characters, so a 2,500-run
//! batch stays a few kilobytes. The token is the body (deflated when large, after a byte saying
//! which) sealed by [`crate::tokens`] for the company and scope of the stream: a client cannot
//! forge marks, nor use a token of another company's or another scope's stream.
//!
//! Every event of a scoped stream carries a token, so encoding is on the fan-out's hot path
//! (`docs/BENCHMARKS.md`): a small body (a company's few active runs) is not deflated at all,
//! and a large one reuses its thread's compressor instead of allocating and zeroing a new one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read as _;

use etter_core::ids::WorkflowId;
use flate2::{Compress, Compression, FlushCompress, Status, read::DeflateDecoder};

use crate::tokens::{self, TokenKeys};

/// A deflated body follows.
const DEFLATED: u8 = 1;
/// The body as it is follows.
const PLAIN: u8 = 2;
/// Bodies up to this size are sent as they are: deflating them saves a few bytes at most.
const PLAIN_UP_TO: usize = 512;
/// Refuse tokens that inflate beyond this (a token for far more runs than any scope holds).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// What a token is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// A batch, by id.
    Batch(String),
    /// A company's active runs, by company id.
    Company(String),
}

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadToken {
    /// Not sealed by this server for this stream's company and scope.
    #[error("{0}; start a new watch without it")]
    Seal(#[from] tokens::TokenError),
    /// Sealed, yet not a body this server writes (never expected: a bug, not an attack).
    #[error("cannot be read ({0}); start a new watch without it")]
    Body(&'static str),
}

/// What binds a token to the stream it was issued for: the company whose runs it marks, and the
/// scope.
pub fn binding(company: &str, scope: &TokenScope) -> Vec<u8> {
    let (kind, id) = match scope {
        TokenScope::Batch(id) => ("batch", id),
        TokenScope::Company(id) => ("company", id),
    };
    format!("{company}\n{kind}\n{id}").into_bytes()
}

/// What a token holds: its scope and the marks.
pub type Decoded = (TokenScope, BTreeMap<WorkflowId, u64>);

/// Encodes `scope` and `marks` as a token sealed for `binding` ([`binding`]).
pub fn encode(keys: &TokenKeys, binding: &[u8], scope: &TokenScope, marks: &BTreeMap<WorkflowId, u64>) -> String {
    let mut body = Vec::with_capacity(16 + marks.len() * 8);
    let (kind, id) = match scope {
        TokenScope::Batch(id) => (1_u8, id),
        TokenScope::Company(id) => (2_u8, id),
    };
    body.push(kind);
    put_bytes(&mut body, id.as_bytes());
    put_varint(&mut body, marks.len() as u64);
    let mut previous: &[u8] = &[];
    for (run, mark) in marks {
        let run = run.as_str().as_bytes();
        let shared = previous.iter().zip(run).take_while(|(a, b)| a == b).count();
        put_varint(&mut body, shared as u64);
        put_bytes(&mut body, &run[shared..]);
        put_varint(&mut body, *mark);
        previous = run;
    }
    let payload = match deflate(&body) {
        Some(mut deflated) if body.len() > PLAIN_UP_TO => {
            deflated.insert(0, DEFLATED);
            deflated
        }
        _ => {
            body.insert(0, PLAIN);
            body
        }
    };
    keys.seal(tokens::Kind::Watch, binding, &payload)
}

thread_local! {
    /// Raw deflate at the fast level, reset between tokens.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// `body` deflated by this thread's compressor; `None` for a small body (not worth it) or should
/// the compressor fail (the body is then sent as it is).
fn deflate(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() <= PLAIN_UP_TO {
        return None;
    }
    COMPRESSOR.with(|compressor| {
        let mut compressor = compressor.borrow_mut();
        compressor.reset();
        let mut out = Vec::with_capacity(body.len() / 2 + 64);
        loop {
            let consumed = usize::try_from(compressor.total_in()).ok()?;
            match compressor.compress_vec(body.get(consumed..)?, &mut out, FlushCompress::Finish).ok()? {
                Status::StreamEnd => return Some(out),
                Status::Ok | Status::BufError => out.reserve(out.capacity().max(64)),
            }
        }
    })
}

/// Decodes a token from [`encode`], once its seal holds for `binding`.
pub fn decode(keys: &TokenKeys, binding: &[u8], token: &str) -> Result<Decoded, BadToken> {
    let payload = keys.open(tokens::Kind::Watch, binding, token)?;
    let body = match payload.split_first() {
        Some((&DEFLATED, deflated)) => {
            let mut body = Vec::new();
            DeflateDecoder::new(deflated)
                .take(MAX_BODY)
                .read_to_end(&mut body)
                .map_err(|_| BadToken::Body("corrupt"))?;
            body
        }
        Some((&PLAIN, body)) => body.to_vec(),
        _ => return Err(BadToken::Body("unknown form")),
    };
    let mut reader = Reader { bytes: &body };
    let kind = reader.byte()?;
    let id = String::from_utf8(reader.bytes()?.to_vec()).map_err(|_| BadToken::Body("corrupt scope"))?;
    let scope = match kind {
        1 => TokenScope::Batch(id),
        2 => TokenScope::Company(id),
        _ => return Err(BadToken::Body("unknown scope")),
    };
    let count = reader.varint()?;
    let mut marks = BTreeMap::new();
    let mut previous: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared = usize::try_from(reader.varint()?).map_err(|_| BadToken::Body("corrupt run"))?;
        let rest = reader.bytes()?;
        let mut run = previous.get(..shared).ok_or(BadToken::Body("corrupt run"))?.to_vec();
        run.extend_from_slice(rest);
        let mark = reader.varint()?;
        let id =
            std::str::from_utf8(&run).ok().and_then(|s| WorkflowId::parse(s).ok()).ok_or(BadToken::Body("bad run"))?;
        marks.insert(id, mark);
        previous = run;
    }
    if !reader.bytes.is_empty() {
        return Err(BadToken::Body("trailing data"));
    }
    Ok((scope, marks))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, BadToken> {
        let (first, rest) = self.bytes.split_first().ok_or(BadToken::Body("truncated"))?;
        self.bytes = rest;
        Ok(*first)
    }

    fn varint(&mut self) -> Result<u64, BadToken> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BadToken::Body("corrupt number"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BadToken> {
        let len = usize::try_from(self.varint()?).map_err(|_| BadToken::Body("truncated"))?;
        if len > self.bytes.len() {
            return Err(BadToken::Body("truncated"));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"a test key of at least thirty-two bytes";

    fn keys() -> TokenKeys {
        TokenKeys::new(SECRET, &[])
    }

    fn run(role: &str, n: u32) -> WorkflowId {
        WorkflowId::parse(&format!("role-onboard-cr-acme-{role}-{n}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn round_trip(scope: &TokenScope, marks: &BTreeMap<WorkflowId, u64>) -> (String, Result<Decoded, BadToken>) {
        let bound = binding("acme", scope);
        let token = encode(&keys(), &bound, scope, marks);
        let decoded = decode(&keys(), &bound, &token);
        (token, decoded)
    }

    #[test]
    fn a_large_batch_makes_a_small_token() {
        let marks: BTreeMap<WorkflowId, u64> =
            (0..2_500).map(|i| (run(&format!("claims-role-{i:04}"), 1), 20 + (i % 13) as u64)).collect();
        let scope = TokenScope::Batch("batch-00000000000000000000000000000abc".into());
        let (token, decoded) = round_trip(&scope, &marks);
        assert!(token.len() < 12_000, "{} bytes", token.len());
        assert_eq!(decoded, Ok((scope, marks)));
    }

    #[test]
    fn a_small_body_is_not_deflated_and_a_reused_compressor_gives_the_same_token() {
        let company = TokenScope::Company("acme".into());
        let bound = binding("acme", &company);
        let few = BTreeMap::from([(run("analyst", 1), 3), (run("claims-adjuster", 2), 17)]);
        let payload = |token: &str| keys().open(tokens::Kind::Watch, &bound, token).unwrap_or_default();
        assert_eq!(payload(&encode(&keys(), &bound, &company, &few)).first(), Some(&PLAIN));
        let many: BTreeMap<WorkflowId, u64> = (0..200).map(|i| (run(&format!("role-{i}"), 1), i)).collect();
        let first = encode(&keys(), &bound, &company, &many);
        assert_eq!(payload(&first).first(), Some(&DEFLATED));
        assert_eq!(encode(&keys(), &bound, &company, &many), first, "the thread's compressor was not reset");
        assert_eq!(decode(&keys(), &bound, &first), Ok((company, many)));
    }

    #[test]
    fn a_token_is_refused_for_another_company_or_scope_and_when_not_sealed_here() {
        let scope = TokenScope::Company("acme".into());
        let marks = BTreeMap::from([(run("analyst", 1), 3)]);
        let token = encode(&keys(), &binding("acme", &scope), &scope, &marks);
        let refused = |binding: &[u8], token: &str| matches!(decode(&keys(), binding, token), Err(BadToken::Seal(_)));
        assert!(refused(&binding("acme-secret", &TokenScope::Company("acme-secret".into())), &token));
        assert!(refused(&binding("acme", &TokenScope::Batch("acme".into())), &token));
        let bound = binding("acme", &scope);
        assert!(refused(&bound, &token[..token.len() - 3]));
        for bad in ["", "w1.", "w1.!!!", "w2.AAAA", "v1.abc", "t1.AAAAAAAA"] {
            assert!(refused(&bound, bad), "{bad:?}");
        }
        assert!(refused(
            &bound,
            &encode(&TokenKeys::new(b"another key, also thirty-two bytes long", &[]), &bound, &scope, &marks)
        ));
        // A token of the unsealed form earlier servers issued names itself as such.
        assert_eq!(decode(&keys(), &bound, "w2.AQRhY21lAA"), Err(BadToken::Seal(tokens::TokenError::Earlier)));
    }

    proptest! {
        #[test]
        fn marks_survive_the_round_trip(
            roles in prop::collection::btree_map("[a-z]{1,12}(-[a-z0-9]{1,6}){0,2}", (1u32..40, any::<u64>()), 0..60),
            company in any::<bool>(),
        ) {
            let marks: BTreeMap<WorkflowId, u64> = roles.iter().map(|(role, (n, mark))| (run(role, *n), *mark)).collect();
            let scope = if company { TokenScope::Company("acme".into()) } else { TokenScope::Batch("batch-1".into()) };
            prop_assert_eq!(round_trip(&scope, &marks).1, Ok((scope, marks)));
        }
    }
}
