//! The `resume_token` of batch and company watches: the scope and every watched run's high-water
//! mark (the last sequence the client received), so a resumed stream sends exactly the events
//! after them — nothing missed, nothing repeated (DESIGN §4).
//!
//! Encoding: `w1.` + URL-safe base64 (no padding) of the deflated body, or `w2.` + the same of
//! the body as it is when it is small. The body is the scope (kind byte, length-prefixed id) and
//! the marks sorted by workflow id, each id front-coded against the previous one (shared prefix
//! length, then the rest), with LEB128 varints for numbers. Ids of one company share most of
//! their characters, so a 2,500-run batch stays a few kilobytes.
//!
//! Every event of a scoped stream carries a token, so encoding is on the fan-out's hot path
//! (`docs/BENCHMARKS.md`): a small body (a company's few active runs) is not deflated at all,
//! and a large one reuses its thread's compressor instead of allocating and zeroing a new one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read as _;

use base64::Engine as _;
use etter_pipeline::ids::WorkflowId;
use flate2::{Compress, Compression, FlushCompress, Status, read::DeflateDecoder};

/// A deflated body.
const DEFLATED: &str = "w1.";
/// A body as it is.
const PLAIN: &str = "w2.";
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
#[error("resume_token is not one this server issued ({0}); start a new watch without it")]
pub struct BadToken(&'static str);

/// Encodes `scope` and `marks` as a token.
pub fn encode(scope: &TokenScope, marks: &BTreeMap<WorkflowId, u64>) -> String {
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
    let base64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match deflate(&body) {
        Some(deflated) if body.len() > PLAIN_UP_TO => format!("{DEFLATED}{}", base64.encode(deflated)),
        _ => format!("{PLAIN}{}", base64.encode(body)),
    }
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

/// Decodes a token from [`encode`].
pub fn decode(token: &str) -> Result<(TokenScope, BTreeMap<WorkflowId, u64>), BadToken> {
    let base64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = if let Some(encoded) = token.strip_prefix(DEFLATED) {
        let deflated = base64.decode(encoded).map_err(|_| BadToken("not base64"))?;
        let mut body = Vec::new();
        DeflateDecoder::new(deflated.as_slice())
            .take(MAX_BODY)
            .read_to_end(&mut body)
            .map_err(|_| BadToken("corrupt"))?;
        body
    } else if let Some(encoded) = token.strip_prefix(PLAIN) {
        base64.decode(encoded).map_err(|_| BadToken("not base64"))?
    } else {
        return Err(BadToken("unknown version"));
    };
    let mut reader = Reader { bytes: &body };
    let kind = reader.byte()?;
    let id = String::from_utf8(reader.bytes()?.to_vec()).map_err(|_| BadToken("corrupt scope"))?;
    let scope = match kind {
        1 => TokenScope::Batch(id),
        2 => TokenScope::Company(id),
        _ => return Err(BadToken("unknown scope")),
    };
    let count = reader.varint()?;
    let mut marks = BTreeMap::new();
    let mut previous: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared = usize::try_from(reader.varint()?).map_err(|_| BadToken("corrupt run"))?;
        let rest = reader.bytes()?;
        let mut run = previous.get(..shared).ok_or(BadToken("corrupt run"))?.to_vec();
        run.extend_from_slice(rest);
        let mark = reader.varint()?;
        let id = std::str::from_utf8(&run).ok().and_then(|s| WorkflowId::parse(s).ok()).ok_or(BadToken("bad run"))?;
        marks.insert(id, mark);
        previous = run;
    }
    if !reader.bytes.is_empty() {
        return Err(BadToken("trailing data"));
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
        let (first, rest) = self.bytes.split_first().ok_or(BadToken("truncated"))?;
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
        Err(BadToken("corrupt number"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BadToken> {
        let len = usize::try_from(self.varint()?).map_err(|_| BadToken("truncated"))?;
        if len > self.bytes.len() {
            return Err(BadToken("truncated"));
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

    fn run(role: &str, n: u32) -> WorkflowId {
        WorkflowId::parse(&format!("role-onboard-cr-acme-{role}-{n}")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_large_batch_makes_a_small_token() -> Result<(), BadToken> {
        let marks: BTreeMap<WorkflowId, u64> =
            (0..2_500).map(|i| (run(&format!("claims-role-{i:04}"), 1), 20 + (i % 13) as u64)).collect();
        let scope = TokenScope::Batch("batch-00000000000000000000000000000abc".into());
        let token = encode(&scope, &marks);
        assert!(token.len() < 12_000, "{} bytes", token.len());
        assert_eq!(decode(&token)?, (scope, marks));
        Ok(())
    }

    #[test]
    fn a_small_body_is_not_deflated_and_a_reused_compressor_gives_the_same_token() -> Result<(), BadToken> {
        let company = TokenScope::Company("acme".into());
        let few = BTreeMap::from([(run("analyst", 1), 3), (run("claims-adjuster", 2), 17)]);
        assert!(encode(&company, &few).starts_with(PLAIN));
        let many: BTreeMap<WorkflowId, u64> = (0..200).map(|i| (run(&format!("role-{i}"), 1), i)).collect();
        let first = encode(&company, &many);
        assert!(first.starts_with(DEFLATED));
        assert_eq!(encode(&company, &many), first, "the thread's compressor was not reset");
        assert_eq!(decode(&first)?, (company, many));
        Ok(())
    }

    #[test]
    fn a_deflated_token_of_a_small_body_from_an_earlier_server_still_resumes() -> Result<(), BadToken> {
        use std::io::Write as _;
        // Servers before the plain form deflated every body; their clients keep such tokens.
        let marks = BTreeMap::from([(run("analyst", 1), 3)]);
        let plain = encode(&TokenScope::Company("acme".into()), &marks);
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(plain.trim_start_matches(PLAIN))
            .map_err(|_| BadToken("test body"))?;
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&body).map_err(|_| BadToken("test deflate"))?;
        let deflated = encoder.finish().map_err(|_| BadToken("test deflate"))?;
        let earlier = format!("{DEFLATED}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(deflated));
        assert_eq!(decode(&earlier)?, (TokenScope::Company("acme".into()), marks));
        Ok(())
    }

    #[test]
    fn tokens_that_were_not_issued_are_refused() {
        for bad in ["", "w1.", "w1.!!!", "w2.AAAA", "v1.abc", "w1.AAAAAAAA"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let token = encode(&TokenScope::Company("acme".into()), &BTreeMap::from([(run("analyst", 1), 3)]));
        let truncated = &token[..token.len() - 3];
        assert!(decode(truncated).is_err());
    }

    proptest! {
        #[test]
        fn marks_survive_the_round_trip(
            roles in prop::collection::btree_map("[a-z]{1,12}(-[a-z0-9]{1,6}){0,2}", (1u32..40, any::<u64>()), 0..60),
            company in any::<bool>(),
        ) {
            let marks: BTreeMap<WorkflowId, u64> = roles.iter().map(|(role, (n, mark))| (run(role, *n), *mark)).collect();
            let scope = if company { TokenScope::Company("acme".into()) } else { TokenScope::Batch("batch-1".into()) };
            prop_assert_eq!(decode(&encode(&scope, &marks)), Ok((scope, marks)));
        }
    }
}
