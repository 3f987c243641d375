//! PDF text, all of it: a corpus of generated PDFs, one per text-showing operator (`Tj`, `TJ`,
//! `'`, `"`), font encoding (WinAnsi, MacRoman, the standard encoding, a composite font with a
//! ToUnicode map) and compression (plain and Flate), each of which must give back every line it
//! draws; and the two ways a PDF can have no readable text, each named for what it is.

use std::io::Write as _;

use anyhow::{Context as _, Result, ensure};
use etter_documents::{DocumentUri, ExtractLimits, extract_blocking};
use flate2::{Compression, write::ZlibEncoder};
use pdf_extract::{
    Dictionary, Document, Object, Stream, StringFormat,
    content::{Content, Operation},
};

const LIMITS: ExtractLimits = ExtractLimits { max_input_bytes: 1 << 20, max_text_chars: 100_000 };

/// How a font encodes the lines.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    WinAnsi,
    MacRoman,
    /// Helvetica without an `/Encoding`: its built-in (standard) encoding.
    Standard,
    /// A Type0 font, Identity-H, two bytes per glyph, with a ToUnicode map.
    IdentityWithToUnicode,
    /// The same without a ToUnicode map: the glyphs say nothing about their characters.
    IdentityWithoutToUnicode,
}

/// The lines each PDF draws, one per operator. Accents where the encoding has them.
fn lines(encoding: Encoding) -> [&'static str; 4] {
    match encoding {
        Encoding::WinAnsi | Encoding::MacRoman => {
            ["Café claims review", "Résumé screening", "Naïve fraud checks", "Déjà vu audits"]
        }
        _ => ["Claims review", "Resume screening", "Fraud checks", "Policy audits"],
    }
}

/// `text` as the bytes of a string in `encoding`.
fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::WinAnsi => text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect(),
        Encoding::MacRoman => text
            .chars()
            .map(|c| match c {
                'é' => 0x8E,
                'É' => 0x83,
                'ï' => 0x95,
                'à' => 0x88,
                other => u8::try_from(u32::from(other)).unwrap_or(b'?'),
            })
            .collect(),
        Encoding::Standard => text.bytes().collect(),
        Encoding::IdentityWithToUnicode | Encoding::IdentityWithoutToUnicode => {
            text.chars().flat_map(|c| u16::try_from(u32::from(c)).unwrap_or(0).to_be_bytes()).collect()
        }
    }
}

fn string(bytes: Vec<u8>) -> Object {
    Object::String(bytes, StringFormat::Hexadecimal)
}

/// Draws each line with one operator: `Tj`, `TJ` (with kerning), `'` and `"`.
fn operations(encoding: Encoding) -> Vec<Operation> {
    let [a, b, c, d] = lines(encoding);
    let split = b.len() / 2;
    vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec![Object::Name(b"F1".to_vec()), 12.into()]),
        Operation::new("TL", vec![16.into()]),
        Operation::new("Td", vec![72.into(), 700.into()]),
        Operation::new("Tj", vec![string(encode(a, encoding))]),
        Operation::new("Td", vec![0.into(), (-16).into()]),
        Operation::new(
            "TJ",
            vec![Object::Array(vec![
                string(encode(&b[..split], encoding)),
                (-20).into(),
                string(encode(&b[split..], encoding)),
            ])],
        ),
        Operation::new("'", vec![string(encode(c, encoding))]),
        Operation::new("\"", vec![1.into(), 0.into(), string(encode(d, encoding))]),
        Operation::new("ET", vec![]),
    ]
}

fn dictionary(entries: Vec<(&str, Object)>) -> Dictionary {
    let mut dict = Dictionary::new();
    for (key, value) in entries {
        dict.set(key, value);
    }
    dict
}

fn name(value: &str) -> Object {
    Object::Name(value.as_bytes().to_vec())
}

/// A ToUnicode CMap that maps each two-byte code to the character of the same number (as the
/// lines are encoded).
fn to_unicode_cmap() -> Vec<u8> {
    b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
      /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
      /CMapName /Adobe-Identity-UCS def /CMapType 2 def\n\
      1 begincodespacerange <0000> <FFFF> endcodespacerange\n\
      1 beginbfrange <0020> <00FF> <0020> endbfrange\n\
      endcmap CMapName currentdict /CMap defineresource pop end end\n"
        .to_vec()
}

fn font(doc: &mut Document, encoding: Encoding) -> Object {
    let simple = |encoding: Option<&str>| {
        let mut entries = vec![("Type", name("Font")), ("Subtype", name("Type1")), ("BaseFont", name("Helvetica"))];
        entries.extend(encoding.map(|e| ("Encoding", name(e))));
        Object::Dictionary(dictionary(entries))
    };
    match encoding {
        Encoding::WinAnsi => simple(Some("WinAnsiEncoding")),
        Encoding::MacRoman => simple(Some("MacRomanEncoding")),
        Encoding::Standard => simple(None),
        Encoding::IdentityWithToUnicode | Encoding::IdentityWithoutToUnicode => {
            let descendant = doc.add_object(dictionary(vec![
                ("Type", name("Font")),
                ("Subtype", name("CIDFontType2")),
                ("BaseFont", name("ArialMT")),
                (
                    "CIDSystemInfo",
                    Object::Dictionary(dictionary(vec![
                        ("Registry", Object::string_literal("Adobe")),
                        ("Ordering", Object::string_literal("Identity")),
                        ("Supplement", 0.into()),
                    ])),
                ),
                ("DW", 600.into()),
                (
                    "FontDescriptor",
                    Object::Dictionary(dictionary(vec![
                        ("Type", name("FontDescriptor")),
                        ("FontName", name("ArialMT")),
                        ("Flags", 32.into()),
                        ("FontBBox", Object::Array(vec![(-665).into(), (-325).into(), 2000.into(), 1040.into()])),
                        ("ItalicAngle", 0.into()),
                        ("Ascent", 905.into()),
                        ("Descent", (-212).into()),
                        ("CapHeight", 716.into()),
                        ("StemV", 80.into()),
                    ])),
                ),
            ]));
            let mut entries = vec![
                ("Type", name("Font")),
                ("Subtype", name("Type0")),
                ("BaseFont", name("ArialMT")),
                ("Encoding", name("Identity-H")),
                ("DescendantFonts", Object::Array(vec![descendant.into()])),
            ];
            if matches!(encoding, Encoding::IdentityWithToUnicode) {
                let cmap = doc.add_object(Stream::new(Dictionary::new(), to_unicode_cmap()));
                entries.push(("ToUnicode", cmap.into()));
            }
            Object::Dictionary(dictionary(entries))
        }
    }
}

/// A one-page PDF drawing `operations` with a font of `encoding`.
fn pdf(encoding: Encoding, operations: Vec<Operation>, compressed: bool) -> Result<Vec<u8>> {
    let mut doc = Document::with_version("1.5");
    let pages = doc.new_object_id();
    let font = font(&mut doc, encoding);
    let font = doc.add_object(font);
    let resources =
        doc.add_object(dictionary(vec![("Font", Object::Dictionary(dictionary(vec![("F1", font.into())])))]));
    let plain = Content { operations }.encode()?;
    let content = if compressed {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&plain)?;
        Stream::new(dictionary(vec![("Filter", name("FlateDecode"))]), encoder.finish()?)
    } else {
        Stream::new(Dictionary::new(), plain)
    };
    let content = doc.add_object(content);
    let page = doc.add_object(dictionary(vec![
        ("Type", name("Page")),
        ("Parent", pages.into()),
        ("Contents", content.into()),
        ("Resources", resources.into()),
        ("MediaBox", Object::Array(vec![0.into(), 0.into(), 612.into(), 792.into()])),
    ]));
    doc.objects.insert(
        pages,
        Object::Dictionary(dictionary(vec![
            ("Type", name("Pages")),
            ("Kids", Object::Array(vec![page.into()])),
            ("Count", 1.into()),
        ])),
    );
    let catalog = doc.add_object(dictionary(vec![("Type", name("Catalog")), ("Pages", pages.into())]));
    doc.trailer.set("Root", catalog);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes)?;
    Ok(bytes)
}

fn uri(label: &str) -> Result<DocumentUri> {
    Ok(DocumentUri::parse(&format!("s3://corpus/{label}.pdf"))?)
}

#[test]
fn text_drawn_with_every_operator_in_every_encoding_is_extracted() -> Result<()> {
    let encodings = [Encoding::WinAnsi, Encoding::MacRoman, Encoding::Standard, Encoding::IdentityWithToUnicode];
    for encoding in encodings {
        for compressed in [false, true] {
            let label = format!("{encoding:?}-{}", if compressed { "flate" } else { "plain" });
            let bytes = pdf(encoding, operations(encoding), compressed)?;
            let text = extract_blocking(&uri(&label)?, &bytes, &LIMITS).with_context(|| label.clone())?.text;
            let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for (operator, line) in ["Tj", "TJ", "'", "\""].iter().zip(lines(encoding)) {
                ensure!(
                    squeezed.contains(line),
                    "{label}: the line drawn with {operator} ({line:?}) is missing: {text:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn a_pdf_without_text_says_so_and_one_whose_text_cannot_be_read_says_why() -> Result<()> {
    // Only a rectangle: no text-showing operator anywhere.
    let drawing =
        vec![Operation::new("re", vec![72.into(), 600.into(), 200.into(), 100.into()]), Operation::new("f", vec![])];
    let bytes = pdf(Encoding::Standard, drawing, true)?;
    let error = extract_blocking(&uri("drawing")?, &bytes, &LIMITS).err().context("a drawing has no text")?;
    ensure!(error.code() == "DOCUMENT_NO_TEXT", "{error}");
    ensure!(error.to_string().contains("nothing in it is written as characters"), "{error}");
    ensure!(!error.to_string().contains("scan"), "the message guesses at scans: {error}");

    // Text drawn with a composite font that has no ToUnicode map: its glyphs name no characters.
    let bytes = pdf(Encoding::IdentityWithoutToUnicode, operations(Encoding::IdentityWithoutToUnicode), false)?;
    let error = extract_blocking(&uri("unmapped")?, &bytes, &LIMITS).err().context("unmapped glyphs were read")?;
    ensure!(error.code() == "DOCUMENT_TEXT_UNMAPPED", "{error}");
    ensure!(error.to_string().contains("fonts that do not say which characters"), "{error}");
    Ok(())
}
