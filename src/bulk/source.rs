//! Reading a file as its source wrote it, before any row is parsed: the encoding (with a
//! byte-order mark or not), the delimiter, and quotes that never close. Every check here runs
//! on the whole file before anything is written, so a file that cannot be read is refused
//! once, with the reason, rather than row by row.

use encoding_rs::{Encoding, UTF_8};

/// The text of a file and where its lines start, for reporting rows by line.
pub struct SourceText {
    pub text: String,
    /// Byte offsets of the first character of each line after the first.
    line_starts: Vec<usize>,
}

impl SourceText {
    /// Decodes `bytes`: with `encoding` as given (a WHATWG label such as `windows-1252` or
    /// `latin1`), or else UTF-8, or the UTF-8 or UTF-16 a byte-order mark announces. A file
    /// that is not valid UTF-8 is refused with the line it fails on and how to read it.
    pub fn decode(bytes: &[u8], encoding: Option<&str>) -> Result<Self, String> {
        let text = match encoding {
            Some(label) => {
                let encoding = encoding_for(label)?;
                let (text, _, had_errors) = encoding.decode(bytes);
                if had_errors {
                    return Err(format!(
                        "the file is not valid {}: some bytes do not decode",
                        encoding.name()
                    ));
                }
                text.into_owned()
            }
            None => {
                let (bom, skip) = Encoding::for_bom(bytes).unwrap_or((UTF_8, 0));
                if bom != UTF_8 {
                    let (text, _, _) = bom.decode(bytes);
                    text.into_owned()
                } else {
                    let body = &bytes[skip..];
                    match std::str::from_utf8(body) {
                        Ok(text) => text.to_owned(),
                        Err(error) => {
                            let line = 1 + body[..error.valid_up_to()]
                                .iter()
                                .filter(|&&b| b == b'\n')
                                .count();
                            return Err(format!(
                                "line {line}: the file is not UTF-8. Files saved by Excel or \
                                 other Windows programs are often Windows-1252: run again with \
                                 --encoding windows-1252 (or the file's encoding, e.g. latin1, \
                                 utf-16)"
                            ));
                        }
                    }
                }
            }
        };
        let line_starts = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Ok(Self { text, line_starts })
    }

    /// Drops everything from the first blank line outside quotes: a report's footer
    /// (totals, copyright, who generated it) follows its rows after one.
    pub fn cut_at_blank_line(&mut self) {
        let mut quoted = false;
        let mut line_start = 0;
        let mut blank = true;
        for (i, byte) in self.text.bytes().enumerate() {
            match byte {
                b'"' => {
                    quoted = !quoted;
                    blank = false;
                }
                b'\n' if !quoted => {
                    if blank && line_start > 0 {
                        self.text.truncate(line_start);
                        self.line_starts.retain(|&s| s <= line_start);
                        return;
                    }
                    line_start = i + 1;
                    blank = true;
                }
                b'\r' | b' ' | b'\t' => {}
                _ => blank = false,
            }
        }
    }

    /// The line (from 1) that the byte at `offset` is on. Lines end at `\n`, so a CRLF file
    /// counts as many lines as an LF one.
    pub fn line_of(&self, offset: usize) -> u64 {
        (self.line_starts.partition_point(|&start| start <= offset) + 1) as u64
    }

    /// The line a row starting at `offset` begins on. The CSV reader ends a CRLF row at its
    /// `\r` and places the next row at the `\n`, which is still the line before.
    pub fn line_of_row(&self, offset: usize) -> u64 {
        let skipped = self.text.as_bytes()[offset.min(self.text.len())..]
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.line_of(offset + skipped)
    }

    /// The delimiter of the header line: whichever of `,` `;` tab and `|` it has most of,
    /// outside quotes; a comma when it has none.
    pub fn sniff_delimiter(&self) -> u8 {
        let header = self.text.split('\n').next().unwrap_or_default();
        let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0), (b'|', 0)];
        let mut quoted = false;
        for byte in header.bytes() {
            if byte == b'"' {
                quoted = !quoted;
            } else if !quoted && let Some(count) = counts.iter_mut().find(|(d, _)| *d == byte) {
                count.1 += 1;
            }
        }
        // The first with the highest count: a comma wins ties.
        let best = counts
            .iter()
            .fold(counts[0], |best, &c| if c.1 > best.1 { c } else { best });
        best.0
    }

    /// Refuses a quote that opens a field and never closes: the CSV reader would take the rest
    /// of the file as that one field.
    pub fn check_quotes(&self, delimiter: u8) -> Result<(), String> {
        let bytes = self.text.as_bytes();
        let mut i = 0;
        let mut field_start = true;
        while i < bytes.len() {
            let byte = bytes[i];
            if field_start && byte == b'"' {
                let opened = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(format!(
                                "line {}: a quote opens a field here and is never closed, so \
                                 the rest of the file would read as one field",
                                self.line_of(opened)
                            ));
                        }
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                field_start = false;
                continue;
            }
            field_start = byte == delimiter || byte == b'\n' || byte == b'\r';
            i += 1;
        }
        Ok(())
    }
}

/// An encoding by its WHATWG label, case-insensitively: `utf-8`, `windows-1252`, `latin1`,
/// `iso-8859-15`, `utf-16le`, `shift_jis`, …
pub fn encoding_for(label: &str) -> Result<&'static Encoding, String> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
        format!(
            "{label:?} is not an encoding: use a name such as utf-8, windows-1252, latin1 or \
             utf-16"
        )
    })
}

/// `,`, `;`, `|`, `tab` (or a tab character): one ASCII character.
pub fn parse_delimiter(value: &str) -> Result<u8, String> {
    match value {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if value.len() == 1 && value.is_ascii() && value != "\"" => Ok(value.as_bytes()[0]),
        _ => Err(format!(
            "{value:?} is not a delimiter: give one character, such as , ; | or tab"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_crlf_like_lf() {
        let source = SourceText::decode(b"a,b\r\n1,2\r\n3,\"x\r\ny\"\r\n5,6\r\n", None).unwrap();
        let offset = |needle: &str| source.text.find(needle).unwrap();
        assert_eq!(source.line_of(0), 1);
        assert_eq!(source.line_of(offset("1,2")), 2);
        assert_eq!(source.line_of(offset("3,")), 3);
        assert_eq!(source.line_of(offset("5,6")), 5);
    }

    #[test]
    fn rows_of_crlf_files_start_on_their_own_line() {
        let text = b"a,b\r\n1,\"x\r\ny\"\r\n3,4\r\n";
        let source = SourceText::decode(text, None).unwrap();
        let mut reader = csv::ReaderBuilder::new().from_reader(&text[..]);
        let lines: Vec<u64> = reader
            .records()
            .map(|r| source.line_of_row(r.unwrap().position().unwrap().byte() as usize))
            .collect();
        assert_eq!(lines, [2, 4]);
    }

    #[test]
    fn a_report_footer_is_cut_at_the_first_blank_line() {
        let mut source = SourceText::decode(
            b"a,b\r\n1,\"x\r\n\r\ny\"\r\n\r\n\"Grand Totals (1 records)\"\r\n\r\n\"Confidential\"\r\n",
            None,
        )
        .unwrap();
        source.cut_at_blank_line();
        assert_eq!(source.text, "a,b\r\n1,\"x\r\n\r\ny\"\r\n");
    }

    #[test]
    fn encodings_and_byte_order_marks() {
        let bom = SourceText::decode(b"\xef\xbb\xbfexternal_id,title\n", None).unwrap();
        assert!(bom.text.starts_with("external_id"));
        let utf16 = SourceText::decode(b"\xff\xfea\x00,\x00b\x00", None).unwrap();
        assert_eq!(utf16.text, "a,b");
        let cp1252 = b"external_id,title\ncrm-1,Caf\xe9 M\xfcller\n";
        let refused = SourceText::decode(cp1252, None).err().unwrap();
        assert!(
            refused.starts_with("line 2: the file is not UTF-8")
                && refused.contains("--encoding windows-1252"),
            "{refused}"
        );
        let read = SourceText::decode(cp1252, Some("Windows-1252")).unwrap();
        assert!(read.text.ends_with("Café Müller\n"));
        assert!(SourceText::decode(b"", Some("klingon")).is_err());
    }

    #[test]
    fn delimiters_are_sniffed_from_the_header() {
        let sniff = |text: &str| {
            SourceText::decode(text.as_bytes(), None)
                .unwrap()
                .sniff_delimiter()
        };
        assert_eq!(sniff("external_id;title;owner\n1;a,b;c\n"), b';');
        assert_eq!(sniff("external_id,title\n"), b',');
        assert_eq!(sniff("external_id\ttitle\n"), b'\t');
        assert_eq!(sniff("\"a;b\",c\n"), b',');
        assert_eq!(sniff("title\n"), b',');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter(";;").is_err());
    }

    #[test]
    fn an_unterminated_quote_is_found_where_it_opens() {
        let source =
            SourceText::decode(b"a,b\r\n1,\"ok\"\"\"\r\n2,\"never closed\r\n3,4\r\n", None)
                .unwrap();
        let refused = source.check_quotes(b',').unwrap_err();
        assert!(refused.starts_with("line 3: a quote opens"), "{refused}");
        let fine = SourceText::decode(b"a,b\n1,\"multi\nline\"\n2,x\"y\n", None).unwrap();
        assert!(fine.check_quotes(b',').is_ok());
    }
}
