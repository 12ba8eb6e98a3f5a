//! A tiny XML well-formedness checker, enough to prove a JUnit report
//! parses: one root element, balanced and properly nested tags, quoted and
//! unique attributes, only the five predefined entities and character
//! references, no raw `<` or `&` in text or attributes. Returns the element
//! tree so tests can look inside.

use std::collections::BTreeMap;

/// An element: name, attributes (entities decoded), children, text.
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// Every descendant (and self) named `name`, depth first.
    pub fn find_all<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        if self.name == name {
            out.push(self);
        }
        for c in &self.children {
            c.find_all(name, out);
        }
    }

    /// All descendants named `name`.
    pub fn all(&self, name: &str) -> Vec<&Element> {
        let mut v = Vec::new();
        self.find_all(name, &mut v);
        v
    }

    /// An attribute, or a panic naming it.
    pub fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).unwrap_or_else(|| panic!("<{}> has no attribute {name}", self.name))
    }
}

/// Parses `doc`, or explains the first problem with its byte offset.
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut p = Parser { s: doc.as_bytes(), i: 0 };
    p.skip_ws();
    if p.starts("<?xml") {
        p.until("?>")?;
    }
    p.misc()?;
    let root = p.element()?;
    p.misc()?;
    if p.i != p.s.len() {
        return Err(p.err("content after the root element"));
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        let end = (self.i + 30).min(self.s.len());
        format!("{what} at byte {}: {:?}", self.i, String::from_utf8_lossy(&self.s[self.i..end]))
    }
    fn starts(&self, t: &str) -> bool {
        self.s[self.i..].starts_with(t.as_bytes())
    }
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn until(&mut self, end: &str) -> Result<(), String> {
        match self.s[self.i..].windows(end.len()).position(|w| w == end.as_bytes()) {
            Some(n) => {
                self.i += n + end.len();
                Ok(())
            }
            None => Err(self.err(&format!("unterminated, looking for {end:?}"))),
        }
    }
    /// Comments, processing instructions and whitespace.
    fn misc(&mut self) -> Result<(), String> {
        loop {
            self.skip_ws();
            if self.starts("<!--") {
                self.until("-->")?;
            } else if self.starts("<?") {
                self.until("?>")?;
            } else {
                return Ok(());
            }
        }
    }
    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        while self.i < self.s.len() {
            let c = self.s[self.i];
            let ok = c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'-' | b'.') || c >= 0x80;
            if !ok || (self.i == start && (c.is_ascii_digit() || c == b'-' || c == b'.')) {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    /// Character data up to `stop` (exclusive), entities decoded.
    fn chars(&mut self, stop: u8) -> Result<String, String> {
        let mut out = String::new();
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != stop {
            match self.s[self.i] {
                b'<' => return Err(self.err("raw '<'")),
                b'&' => {
                    let semi = self.s[self.i..]
                        .iter()
                        .position(|&c| c == b';')
                        .ok_or_else(|| self.err("bad '&'"))?;
                    let ent = std::str::from_utf8(&self.s[self.i + 1..self.i + semi])
                        .map_err(|_| self.err("entity"))?;
                    let c = match ent {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        e if e.starts_with("#x") => char::from_u32(
                            u32::from_str_radix(&e[2..], 16).map_err(|_| self.err("char ref"))?,
                        )
                        .ok_or_else(|| self.err("char ref"))?,
                        e if e.starts_with('#') => {
                            char::from_u32(e[1..].parse().map_err(|_| self.err("char ref"))?)
                                .ok_or_else(|| self.err("char ref"))?
                        }
                        _ => return Err(self.err("unknown entity")),
                    };
                    if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') {
                        return Err(self.err("character not allowed in XML 1.0"));
                    }
                    out.push(c);
                    self.i += semi + 1;
                }
                c if c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r') => {
                    return Err(self.err("control character"));
                }
                _ => {
                    let len = utf8_len(self.s[self.i]);
                    let piece =
                        std::str::from_utf8(&self.s[self.i..self.i + len]).map_err(|_| self.err("UTF-8"))?;
                    out.push_str(piece);
                    self.i += len;
                }
            }
        }
        let _ = start;
        Ok(out)
    }
    fn element(&mut self) -> Result<Element, String> {
        if !self.starts("<") {
            return Err(self.err("expected '<'"));
        }
        self.i += 1;
        let mut el = Element { name: self.name()?, ..Default::default() };
        loop {
            let before = self.i;
            self.skip_ws();
            if self.starts("/>") {
                self.i += 2;
                return Ok(el);
            }
            if self.starts(">") {
                self.i += 1;
                break;
            }
            if self.i == before {
                return Err(self.err("expected whitespace before an attribute"));
            }
            let key = self.name()?;
            self.skip_ws();
            if !self.starts("=") {
                return Err(self.err("expected '='"));
            }
            self.i += 1;
            self.skip_ws();
            let q = *self.s.get(self.i).ok_or_else(|| self.err("eof"))?;
            if q != b'"' && q != b'\'' {
                return Err(self.err("unquoted attribute"));
            }
            self.i += 1;
            let v = self.chars(q)?;
            self.i += 1;
            if el.attrs.insert(key.clone(), v).is_some() {
                return Err(self.err(&format!("duplicate attribute {key}")));
            }
        }
        loop {
            if self.i >= self.s.len() {
                return Err(self.err(&format!("unclosed <{}>", el.name)));
            }
            if self.starts("</") {
                self.i += 2;
                let n = self.name()?;
                if n != el.name {
                    return Err(self.err(&format!("</{n}> closes <{}>", el.name)));
                }
                self.skip_ws();
                if !self.starts(">") {
                    return Err(self.err("expected '>'"));
                }
                self.i += 1;
                return Ok(el);
            } else if self.starts("<!--") {
                self.until("-->")?;
            } else if self.starts("<![CDATA[") {
                let start = self.i + 9;
                self.until("]]>")?;
                el.text.push_str(&String::from_utf8_lossy(&self.s[start..self.i - 3]));
            } else if self.starts("<") {
                el.children.push(self.element()?);
            } else {
                let t = self.chars(b'<')?;
                el.text.push_str(&t);
            }
        }
    }
}

fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}
