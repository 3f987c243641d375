//! The WordprocessingML body parser alone (no ZIP layer, which mutations mostly break): it is our
//! own code, so any panic is a bug and aborts.
#![no_main]

use etter_documents::fuzzing::docx_xml_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = docx_xml_text(data, 1 << 20) {
        assert!(text.len() <= 1 << 20, "text cap not enforced: {} bytes", text.len());
    }
});
