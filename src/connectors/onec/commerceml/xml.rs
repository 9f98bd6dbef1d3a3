//! A streaming reader of CommerceML files that stops after a bounded amount of work and
//! resumes later from a saved [`Cursor`] (byte offset + open elements), so that a 500 MB
//! upload is read in many short `mode=import` requests and never sits in memory: only one
//! item (`Товар`, `Предложение`, `Документ`) is built as a tree at a time.
//!
//! quick-xml reads raw bytes; names, text and attribute values are decoded here with the
//! encoding the XML declaration names (UTF-8 or windows-1251 in practice). Both are
//! ASCII-compatible, so the markup itself parses the same either way.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use encoding_rs::{Encoding, UTF_8};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use serde::{Deserialize, Serialize};

/// The root element of every CommerceML document.
pub const ROOT: &str = "КоммерческаяИнформация";
/// An item bigger than this is refused: one `Товар` is kilobytes, not megabytes.
const MAX_ITEM_BYTES: u64 = 16 << 20;
/// How deep elements may nest. CommerceML needs about ten levels; the tree of an item is
/// built, mapped and dropped recursively, so a hostile depth must be refused before it
/// exhausts the stack.
const MAX_DEPTH: usize = 48;
/// Elements one item may hold (a product with every property and price has a few hundred).
const MAX_ITEM_NODES: usize = 100_000;

/// The file under the XML reader, with a byte budget: quick-xml reads a text node or tag
/// whole into memory, so a 100 MB text must be cut off while it is read, not after.
struct Budgeted {
    file: File,
    left: std::cell::Cell<u64>,
    /// The budget ran out (the read error is ours, not the disk's).
    spent: std::cell::Cell<bool>,
}

impl Read for Budgeted {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            self.spent.set(true);
            return Err(std::io::Error::other("over the byte budget"));
        }
        let max = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut out[..max])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

type XmlReader = Reader<BufReader<Budgeted>>;

fn budget(reader: &XmlReader) -> &Budgeted {
    reader.get_ref().get_ref()
}

/// Where reading a file stopped, saved between `mode=import` requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Byte offset in the file just after the last event handled.
    pub offset: u64,
    /// Local names of the elements open at `offset`, outermost first.
    pub stack: Vec<String>,
    /// The encoding label from the XML declaration (`None`: UTF-8).
    pub encoding: Option<String>,
    pub header: Header,
    /// Items read so far.
    pub items: u64,
    /// The whole file has been read.
    pub done: bool,
}

/// What the document says about itself before (and around) its items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub schema_version: Option<String>,
    pub namespace: Option<String>,
    pub formed_at: Option<String>,
    /// `СодержитТолькоИзменения` of the catalog or offer package.
    pub only_changes: Option<bool>,
    /// `Каталог/Ид`, or `ПакетПредложений/ИдКаталога`.
    pub catalog_id: Option<String>,
    pub classifier_id: Option<String>,
    /// `ПакетПредложений/Ид`.
    pub package_id: Option<String>,
    /// `ТипыЦен/ТипЦены`: (Ид, Наименование, Валюта).
    pub price_types: Vec<(String, String, Option<String>)>,
}

/// One element as a tree: local name, attributes, trimmed text, children in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of a child, `None` when absent or empty.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.as_str())
            .filter(|t| !t.is_empty())
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What kind of object an item element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `Каталог/Товары/Товар` (import.xml).
    Product,
    /// `ПакетПредложений/Предложения/Предложение` (offers, prices, rests).
    Offer,
    /// `Документ`, at the root (2.x) or in a `Контейнер` (3.1).
    Order,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Product => "product",
            Kind::Offer => "offer",
            Kind::Order => "order",
        }
    }
}

/// Which element paths are items. `stack` holds the open ancestors, root first.
fn item_kind(stack: &[String], name: &str) -> Option<Kind> {
    let parents: Vec<&str> = stack.iter().map(String::as_str).collect();
    match (parents.as_slice(), name) {
        ([ROOT, "Каталог", "Товары"], "Товар") => Some(Kind::Product),
        (
            [
                ROOT,
                "ПакетПредложений" | "ИзмененияПакетаПредложений",
                "Предложения",
            ],
            "Предложение",
        ) => Some(Kind::Offer),
        ([ROOT], "Документ") | ([ROOT, "Контейнер"], "Документ") => {
            Some(Kind::Order)
        }
        _ => None,
    }
}

/// One bounded piece of work: items read, where to go on, and the error that stopped it.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<(Kind, Node)>,
    pub cursor: Cursor,
    /// Set when the file is not well-formed CommerceML; `items` were read before it.
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_items: usize,
    pub deadline: Instant,
}

/// Reads from `cursor` until `limits` are reached, the file ends, or an error.
pub fn read_batch(path: &Path, cursor: Cursor, limits: Limits) -> Batch {
    let mut batch = Batch {
        items: Vec::new(),
        cursor,
        error: None,
    };
    if let Err(e) = run(path, &mut batch, limits) {
        batch.error = Some(e);
    }
    batch
}

fn run(path: &Path, batch: &mut Batch, limits: Limits) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
    let start = match batch.cursor.offset {
        0 => bom_len(&mut file)?,
        n => n,
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let file = Budgeted {
        file,
        left: std::cell::Cell::new(MAX_ITEM_BYTES),
        spent: std::cell::Cell::new(false),
    };
    let mut reader = Reader::from_reader(BufReader::with_capacity(64 << 10, file));
    let config = reader.config_mut();
    // Resuming mid-document means closing tags whose start this reader never saw; the
    // stack of open elements is checked here instead.
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut enc = encoding(batch.cursor.encoding.as_deref())?;
    let mut buf = Vec::new();
    let cur = &mut batch.cursor;
    while batch.items.len() < limits.max_items && Instant::now() < limits.deadline {
        buf.clear();
        // Outside items every event (a tag, a text) is small: each gets the item budget.
        budget(&reader).left.set(MAX_ITEM_BYTES);
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            if budget(&reader).spent.get() {
                format!(
                    "a tag or text at byte {} is larger than {} MiB",
                    start + reader.buffer_position(),
                    MAX_ITEM_BYTES >> 20
                )
            } else {
                xml_error(&e, start + reader.error_position())
            }
        })?;
        match event {
            Event::Decl(d) => {
                if let Some(label) = d.encoding() {
                    let label = label.map_err(|e| format!("bad XML declaration: {e}"))?;
                    let text = String::from_utf8_lossy(&label).into_owned();
                    enc = encoding(Some(&text))?;
                    cur.encoding = Some(enc.name().to_owned());
                }
            }
            Event::Start(e) => {
                let name = local_name(enc, &e);
                check_root(cur, &name)?;
                if cur.stack.is_empty() {
                    root_attrs(cur, enc, &e)?;
                }
                package_attrs(cur, enc, &name, &e)?;
                if let Some(kind) = item_kind(&cur.stack, &name) {
                    let node = subtree(&mut reader, enc, &e, name, start)?;
                    batch.items.push((kind, node));
                    cur.items += 1;
                } else if name == "ТипЦены" && cur.stack.last().is_some_and(|p| p == "ТипыЦен")
                {
                    let node = subtree(&mut reader, enc, &e, name, start)?;
                    price_type(&mut cur.header, &node);
                } else {
                    if cur.stack.len() >= MAX_DEPTH {
                        return Err(format!(
                            "<{name}> at byte {start} nests deeper than {MAX_DEPTH} elements"
                        ));
                    }
                    cur.stack.push(name);
                }
            }
            Event::Empty(e) => {
                let name = local_name(enc, &e);
                check_root(cur, &name)?;
                if cur.stack.is_empty() {
                    root_attrs(cur, enc, &e)?;
                }
            }
            Event::Text(t) => header_text(cur, &decode(enc, &t)),
            Event::End(e) => {
                let name = decode(enc, e.local_name().as_ref()).into_owned();
                match cur.stack.pop() {
                    Some(open) if open == name => {}
                    Some(open) => {
                        return Err(format!("</{name}> closes <{open}>: the XML is broken"));
                    }
                    None => return Err(format!("</{name}> closes nothing")),
                }
            }
            Event::Eof => {
                if let Some(open) = cur.stack.last() {
                    return Err(format!(
                        "the file ends inside <{open}>: it is truncated (was every part uploaded?)"
                    ));
                }
                if cur.header.schema_version.is_none() && cur.items == 0 && !seen_root(cur) {
                    return Err(format!("no <{ROOT}> element: not a CommerceML file"));
                }
                cur.done = true;
                cur.offset = start + reader.buffer_position();
                return Ok(());
            }
            _ => {}
        }
        cur.offset = start + reader.buffer_position();
    }
    Ok(())
}

fn xml_error(e: &quick_xml::Error, at: u64) -> String {
    let text = e.to_string();
    if text.contains("end of input") {
        format!(
            "the file ends inside a tag at byte {at}: it is truncated (was every part uploaded?)"
        )
    } else {
        format!("not well-formed XML at byte {at}: {text}")
    }
}

/// The root was seen when its attributes were read (ВерсияСхемы is required) or items came.
fn seen_root(cur: &Cursor) -> bool {
    cur.header.formed_at.is_some() || cur.header.namespace.is_some()
}

fn check_root(cur: &Cursor, name: &str) -> Result<(), String> {
    if cur.stack.is_empty() && name != ROOT {
        return Err(format!(
            "the root element is <{name}>, not <{ROOT}>: not a CommerceML file"
        ));
    }
    Ok(())
}

/// A UTF-8 byte order mark is skipped (the 1C module writes one).
fn bom_len(file: &mut File) -> Result<u64, String> {
    let mut head = [0u8; 3];
    let n = file
        .read(&mut head)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    Ok(if n == 3 && head == [0xEF, 0xBB, 0xBF] {
        3
    } else {
        0
    })
}

fn encoding(label: Option<&str>) -> Result<&'static Encoding, String> {
    match label {
        None => Ok(UTF_8),
        Some(l) => Encoding::for_label(l.trim().as_bytes())
            .ok_or_else(|| format!("the file's encoding `{l}` is not known")),
    }
}

/// Whether the file ends with the root's end tag (`</КоммерческаяИнформация>`, possibly
/// prefixed, then only whitespace), in UTF-8 or windows-1251: the last part of a file that
/// 1C uploads in parts has arrived. Used where no `mode=import` says so (older modules'
/// order files); the reader itself still checks the whole file.
pub fn ends_document(path: &Path) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(512);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.take(512).read_to_end(&mut tail)?;
    let end = tail
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != 0)
        .map_or(0, |i| i + 1);
    let tail = &tail[..end];
    let Some(open) = tail.windows(2).rposition(|w| w == b"</") else {
        return Ok(false);
    };
    let tag = &tail[open + 2..];
    let Some(name) = tag.strip_suffix(b">") else {
        return Ok(false);
    };
    // `</cml:КоммерческаяИнформация>`: the local name decides.
    let local = name.rsplit(|b| *b == b':').next().unwrap_or(name);
    let utf8 = ROOT.as_bytes();
    let cp1251 = encoding_rs::WINDOWS_1251.encode(ROOT).0;
    Ok(local == utf8 || local == cp1251.as_ref())
}

pub fn decode<'a>(enc: &'static Encoding, bytes: &'a [u8]) -> Cow<'a, str> {
    enc.decode_without_bom_handling(bytes).0
}

fn local_name(enc: &'static Encoding, e: &BytesStart<'_>) -> String {
    decode(enc, e.local_name().as_ref()).into_owned()
}

fn attrs(enc: &'static Encoding, e: &BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        let key = decode(enc, a.key.as_ref()).into_owned();
        let raw = decode(enc, &a.value);
        let value = quick_xml::escape::unescape(&raw)
            .map_err(|err| format!("bad attribute {key}: {err}"))?
            .into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn root_attrs(cur: &mut Cursor, enc: &'static Encoding, e: &BytesStart<'_>) -> Result<(), String> {
    let h = &mut cur.header;
    for (k, v) in attrs(enc, e)? {
        match k.as_str() {
            "ВерсияСхемы" => h.schema_version = Some(v),
            "ДатаФормирования" => h.formed_at = Some(v),
            "xmlns" => h.namespace = Some(v),
            _ => {}
        }
    }
    // Marks the root as seen even when it has no attributes.
    h.formed_at.get_or_insert_with(String::new);
    Ok(())
}

fn package_attrs(
    cur: &mut Cursor,
    enc: &'static Encoding,
    name: &str,
    e: &BytesStart<'_>,
) -> Result<(), String> {
    let package = matches!(
        name,
        "Каталог" | "ПакетПредложений" | "ИзмененияПакетаПредложений"
    );
    if package
        && cur.stack.len() == 1
        && let Some((_, v)) = attrs(enc, e)?
            .into_iter()
            .find(|(k, _)| k == "СодержитТолькоИзменения")
    {
        cur.header.only_changes = Some(v.trim() == "true");
    }
    Ok(())
}

/// Ids of the catalog and package, read from their simple children.
fn header_text(cur: &mut Cursor, text: &str) {
    let text = text.trim();
    if text.is_empty() || cur.stack.len() != 3 {
        return;
    }
    let h = &mut cur.header;
    let slot = match (cur.stack[1].as_str(), cur.stack[2].as_str()) {
        ("Каталог", "Ид") | ("ПакетПредложений" | "ИзмененияПакетаПредложений", "ИдКаталога") => {
            &mut h.catalog_id
        }
        (_, "ИдКлассификатора") => &mut h.classifier_id,
        ("ПакетПредложений" | "ИзмененияПакетаПредложений", "Ид") => {
            &mut h.package_id
        }
        _ => return,
    };
    *slot = Some(text.to_owned());
}

fn price_type(h: &mut Header, node: &Node) {
    if let (Some(id), Some(name)) = (node.text_of("Ид"), node.text_of("Наименование"))
    {
        let currency = node.text_of("Валюта").map(str::to_owned);
        h.price_types
            .push((id.to_owned(), name.to_owned(), currency));
    }
}

/// Reads the element that `first` opened, to its end, as a tree.
fn subtree(
    reader: &mut XmlReader,
    enc: &'static Encoding,
    first: &BytesStart<'_>,
    name: String,
    base: u64,
) -> Result<Node, String> {
    let began = reader.buffer_position();
    // The whole item shares one budget (what BufReader already holds comes on top).
    budget(reader).left.set(MAX_ITEM_BYTES);
    let too_big = |name: &str| {
        format!(
            "<{name}> at byte {} is larger than {} MiB",
            base + began,
            MAX_ITEM_BYTES >> 20
        )
    };
    let mut open = vec![Node {
        name,
        attrs: attrs(enc, first)?,
        ..Node::default()
    }];
    let mut buf = Vec::new();
    let mut nodes = 1;
    loop {
        if nodes > MAX_ITEM_NODES {
            return Err(format!(
                "<{}> at byte {} holds more than {MAX_ITEM_NODES} elements",
                open[0].name,
                base + began
            ));
        }
        if reader.buffer_position() - began > MAX_ITEM_BYTES {
            return Err(too_big(&open[0].name));
        }
        buf.clear();
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            if budget(reader).spent.get() {
                too_big(&open[0].name)
            } else {
                xml_error(&e, base + reader.error_position())
            }
        })?;
        let top = open.len() - 1;
        match event {
            Event::Start(e) => {
                if open.len() >= MAX_DEPTH {
                    return Err(format!(
                        "<{}> at byte {} nests deeper than {MAX_DEPTH} elements",
                        open[0].name,
                        base + began
                    ));
                }
                nodes += 1;
                open.push(Node {
                    name: local_name(enc, &e),
                    attrs: attrs(enc, &e)?,
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                nodes += 1;
                let node = Node {
                    name: local_name(enc, &e),
                    attrs: attrs(enc, &e)?,
                    ..Node::default()
                };
                open[top].children.push(node);
            }
            Event::Text(t) => open[top].text.push_str(&decode(enc, &t)),
            Event::CData(t) => open[top].text.push_str(&decode(enc, &t)),
            Event::GeneralRef(r) => {
                let text = reference(enc, &r)?;
                open[top].text.push_str(&text);
            }
            Event::End(e) => {
                let name = decode(enc, e.local_name().as_ref()).into_owned();
                let Some(mut done) = open.pop() else {
                    return Err(format!("</{name}> closes nothing"));
                };
                if done.name != name {
                    return Err(format!(
                        "</{name}> closes <{}>: the XML is broken",
                        done.name
                    ));
                }
                done.text = done.text.trim().to_owned();
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Eof => {
                return Err(format!(
                    "the file ends inside <{}>: it is truncated (was every part uploaded?)",
                    open[top].name
                ));
            }
            _ => {}
        }
    }
}

/// `&amp;`, `&#1040;`, `&#x410;` and the other predefined references.
fn reference(
    enc: &'static Encoding,
    r: &quick_xml::events::BytesRef<'_>,
) -> Result<String, String> {
    if r.is_char_ref() {
        let c = r
            .resolve_char_ref()
            .map_err(|e| format!("bad character reference: {e}"))?;
        return c
            .map(String::from)
            .ok_or_else(|| "bad character reference".to_owned());
    }
    let name = decode(enc, r);
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_owned)
        .ok_or_else(|| format!("unknown entity &{name};"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(n: usize) -> Limits {
        Limits {
            max_items: n,
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }

    fn write(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text).expect("write");
        f
    }

    /// The budget itself, not a check after the read: it fails after exactly `left`
    /// bytes, says it was spent, and a file within it reads whole.
    #[test]
    fn the_byte_budget_stops_a_read_after_exactly_left_bytes() {
        let f = write(&[b'x'; 100]);
        let budgeted = |left| Budgeted {
            file: File::open(f.path()).expect("open"),
            left: std::cell::Cell::new(left),
            spent: std::cell::Cell::new(false),
        };
        let mut over = budgeted(30);
        let mut out = Vec::new();
        let err = over.read_to_end(&mut out).expect_err("over the budget");
        assert_eq!(err.to_string(), "over the byte budget");
        assert_eq!(out.len(), 30);
        assert_eq!(over.left.get(), 0);
        assert!(over.spent.get());
        let mut within = budgeted(101);
        let mut out = Vec::new();
        assert_eq!(
            within.read_to_end(&mut out).expect("within the budget"),
            100
        );
        assert!(!within.spent.get());
    }

    const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация ВерсияСхемы="2.07" ДатаФормирования="2026-01-15T10:00:00">
 <Каталог СодержитТолькоИзменения="true"><Ид>cat-1</Ид><Наименование>Основной</Наименование>
  <Товары><Товар><Ид>a</Ид><Наименование>Чайник &amp; чашка &#1040;</Наименование></Товар>
   <Товар><Ид>b</Ид><Наименование>Второй</Наименование></Товар>
   <Товар Статус="Удален"><Ид>c</Ид><Наименование>Третий</Наименование></Товар></Товары>
 </Каталог></КоммерческаяИнформация>"#;

    #[test]
    fn resumes_from_the_cursor_item_by_item() {
        let f = write(DOC.as_bytes());
        let mut cursor = Cursor::default();
        let mut names = Vec::new();
        for _ in 0..10 {
            let b = read_batch(f.path(), cursor, limits(1));
            assert_eq!(b.error, None);
            names.extend(
                b.items
                    .iter()
                    .map(|(_, n)| n.text_of("Наименование").map(str::to_owned)),
            );
            cursor = b.cursor;
            if cursor.done {
                break;
            }
        }
        assert!(cursor.done);
        assert_eq!(cursor.items, 3);
        assert_eq!(cursor.header.only_changes, Some(true));
        assert_eq!(cursor.header.catalog_id.as_deref(), Some("cat-1"));
        assert_eq!(cursor.header.schema_version.as_deref(), Some("2.07"));
        assert_eq!(names[0].as_deref(), Some("Чайник & чашка А"));
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn windows_1251_is_decoded_by_the_declaration() {
        let text = DOC.replace("UTF-8", "windows-1251");
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&text);
        let f = write(&bytes);
        let b = read_batch(f.path(), Cursor::default(), limits(10));
        assert_eq!(b.error, None);
        assert_eq!(b.items.len(), 3);
        assert_eq!(b.items[1].1.text_of("Наименование"), Some("Второй"));
        assert_eq!(b.items[2].1.attr("Статус"), Some("Удален"));
    }

    #[test]
    fn the_end_of_a_document_is_seen_in_either_encoding() {
        let whole = write(DOC.as_bytes());
        assert!(ends_document(whole.path()).expect("read"));
        let half = write(&DOC.as_bytes()[..DOC.len() / 2]);
        assert!(!ends_document(half.path()).expect("read"));
        let cp1251 = encoding_rs::WINDOWS_1251
            .encode("<a:КоммерческаяИнформация xmlns:a=\"x\"></a:КоммерческаяИнформация>\r\n")
            .0;
        assert!(ends_document(write(&cp1251).path()).expect("read"));
        assert!(!ends_document(write(b"<x></x>").path()).expect("read"));
        assert!(!ends_document(write(b"").path()).expect("read"));
    }

    #[test]
    fn a_truncated_file_is_an_error_after_the_items_before_it() {
        let cut = &DOC.as_bytes()[..DOC.find("<Товар Статус").expect("third item") + 20];
        let f = write(cut);
        let b = read_batch(f.path(), Cursor::default(), limits(10));
        assert_eq!(b.items.len(), 2);
        assert!(
            b.error.as_deref().is_some_and(|e| e.contains("truncated")),
            "{:?}",
            b.error
        );
    }

    #[test]
    fn broken_nesting_and_foreign_roots_are_errors() {
        let f = write(
            DOC.replace(
                "</Наименование></Товар>\n   <Товар><Ид>b",
                "</Товар>\n   <Товар><Ид>b",
            )
            .as_bytes(),
        );
        let b = read_batch(f.path(), Cursor::default(), limits(10));
        assert!(b.error.is_some());
        let f = write(b"<?xml version=\"1.0\"?><html><body/></html>");
        let b = read_batch(f.path(), Cursor::default(), limits(10));
        assert!(
            b.error
                .as_deref()
                .is_some_and(|e| e.contains("not a CommerceML"))
        );
    }
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    fn read(doc: &str) -> Batch {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("import.xml");
        std::fs::write(&path, doc).expect("write");
        let limits = Limits {
            max_items: 10,
            deadline: Instant::now() + std::time::Duration::from_secs(30),
        };
        read_batch(&path, Cursor::default(), limits)
    }

    fn catalog(item: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><КоммерческаяИнформация ВерсияСхемы=\"2.07\"><Каталог><Товары>{item}</Товары></Каталог></КоммерческаяИнформация>"
        )
    }

    /// A hostile depth is a file error, not a stack overflow that aborts the process.
    #[test]
    fn deep_nesting_is_refused_inside_an_item_and_outside() {
        let deep = 50_000;
        let item = format!(
            "<Товар><Ид>1</Ид>{}{}</Товар>",
            "<a>".repeat(deep),
            "</a>".repeat(deep)
        );
        let batch = read(&catalog(&item));
        let error = batch.error.expect("refused");
        assert!(error.contains("nests deeper"), "{error}");
        assert!(batch.items.is_empty());

        let outside = format!(
            "<КоммерческаяИнформация>{}{}</КоммерческаяИнформация>",
            "<b>".repeat(deep),
            "</b>".repeat(deep)
        );
        let error = read(&outside).error.expect("refused");
        assert!(error.contains("nests deeper"), "{error}");
    }

    /// The item budget holds while a text is read, not only between events.
    #[test]
    fn a_huge_text_is_refused_while_it_is_read() {
        let big = "x".repeat((MAX_ITEM_BYTES + (1 << 20)) as usize);
        let item = format!("<Товар><Ид>1</Ид><Описание>{big}</Описание></Товар>");
        let error = read(&catalog(&item)).error.expect("refused");
        assert!(error.contains("larger than 16 MiB"), "{error}");
        let outside =
            format!("<КоммерческаяИнформация><Каталог>{big}</Каталог></КоммерческаяИнформация>");
        let error = read(&outside).error.expect("refused");
        assert!(error.contains("larger than 16 MiB"), "{error}");
        // Just under the limit is still an item.
        let fits = "x".repeat((MAX_ITEM_BYTES - (1 << 20)) as usize);
        let item = format!("<Товар><Ид>1</Ид><Описание>{fits}</Описание></Товар>");
        let batch = read(&catalog(&item));
        assert!(batch.error.is_none(), "{:?}", batch.error);
        assert_eq!(batch.items.len(), 1);
    }

    /// The deepest item allowed still round-trips through serde_json (whose parser stops
    /// at 128 levels): repeated children make two JSON levels per element.
    #[test]
    fn the_deepest_allowed_item_stays_within_serde_json_depth() {
        let levels = MAX_DEPTH - 1;
        let mut inner = "<a>x</a><a>y</a>".to_owned();
        for _ in 1..levels {
            inner = format!("<a>{inner}</a><a/>");
        }
        let batch = read(&catalog(&format!("<Товар><Ид>1</Ид>{inner}</Товар>")));
        assert!(batch.error.is_none(), "{:?}", batch.error);
        let header = Header::default();
        let src = super::super::map::Source {
            file: "import.xml",
            header: &header,
        };
        let payload = super::super::map::payload(Kind::Product, &batch.items[0].1, &src);
        let text = serde_json::to_string(&payload).expect("serialize");
        let back: serde_json::Value = serde_json::from_str(&text).expect("within 128 levels");
        assert_eq!(back, payload);
    }

    #[test]
    fn an_item_with_too_many_elements_is_refused() {
        let item = format!(
            "<Товар><Ид>1</Ид>{}</Товар>",
            "<a/>".repeat(MAX_ITEM_NODES + 1)
        );
        let error = read(&catalog(&item)).error.expect("refused");
        assert!(error.contains("more than"), "{error}");
    }

    /// Many differently named children map in one pass (this took minutes when each child
    /// rescanned its siblings).
    #[test]
    fn wide_items_map_in_linear_time() {
        let children: String = (0..50_000).map(|i| format!("<c{i}>x</c{i}>")).collect();
        let batch = read(&catalog(&format!("<Товар><Ид>1</Ид>{children}</Товар>")));
        assert!(batch.error.is_none(), "{:?}", batch.error);
        let value = super::super::map::element(&batch.items[0].1);
        assert_eq!(value.as_object().map(serde_json::Map::len), Some(50_001));
    }
}
