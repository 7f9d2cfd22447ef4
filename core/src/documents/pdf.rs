//! A small PDF page writer on `pdf-writer`: lines of text top-down on A4 pages, amounts right-aligned, new pages
//! as needed. The fonts are the PDF standard ones (Helvetica for text, Courier for amounts, so that a column of
//! figures lines up without font metrics), WinAnsi-encoded, nothing embedded: a receipt is a few kilobytes and
//! takes well under a millisecond. Content streams are left uncompressed (they are small), which also keeps the
//! text greppable. Characters outside WinAnsi (Latin-1 plus a few signs such as €) print as `?`.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;
/// Courier's advance width is 600/1000 of the size for every character.
const COURIER_ADVANCE: f32 = 0.6;

enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        text: String,
    },
    /// Right-aligned at `right`, in Courier.
    Figure {
        right: f32,
        y: f32,
        size: f32,
        bold: bool,
        text: String,
    },
    Rule {
        y: f32,
    },
}

/// A document being written, line by line.
pub struct Doc {
    title: String,
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Doc {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            pages: vec![Vec::new()],
            y: HEIGHT - MARGIN,
        }
    }

    /// Moves down by `height`, starting a new page when the line would not fit.
    fn advance(&mut self, height: f32) -> f32 {
        if self.y - height < MARGIN {
            self.pages.push(Vec::new());
            self.y = HEIGHT - MARGIN;
        }
        self.y -= height;
        self.y
    }

    fn push(&mut self, op: Op) {
        if let Some(page) = self.pages.last_mut() {
            page.push(op);
        }
    }

    /// A heading.
    pub fn heading(&mut self, text: &str, size: f32) -> &mut Self {
        let y = self.advance(size * 1.5);
        self.push(Op::Text {
            x: MARGIN,
            y,
            size,
            bold: true,
            text: text.to_owned(),
        });
        self
    }

    /// A line of text (long text wraps at about 90 characters).
    pub fn text(&mut self, text: &str) -> &mut Self {
        for line in wrap(text, 90) {
            let y = self.advance(14.0);
            self.push(Op::Text {
                x: MARGIN,
                y,
                size: 10.0,
                bold: false,
                text: line,
            });
        }
        self
    }

    /// A label with a figure on the right (an amount, a count).
    pub fn row(&mut self, label: &str, figure: &str, bold: bool) -> &mut Self {
        let mut lines = wrap(label, 70).into_iter();
        let first = lines.next().unwrap_or_default();
        let y = self.advance(14.0);
        self.push(Op::Text {
            x: MARGIN,
            y,
            size: 10.0,
            bold,
            text: first,
        });
        self.push(Op::Figure {
            right: WIDTH - MARGIN,
            y,
            size: 10.0,
            bold,
            text: figure.to_owned(),
        });
        for more in lines {
            let y = self.advance(14.0);
            self.push(Op::Text {
                x: MARGIN + 12.0,
                y,
                size: 10.0,
                bold: false,
                text: more,
            });
        }
        self
    }

    /// Cells in columns (a table row): each cell starts at its column's share of the width.
    pub fn cells(&mut self, cells: &[String], bold: bool) -> &mut Self {
        let y = self.advance(14.0);
        let n = cells.len().max(1) as f32;
        let column = (WIDTH - 2.0 * MARGIN) / n;
        let fit = ((column / (10.0 * 0.5)) as usize).max(4);
        for (i, cell) in cells.iter().enumerate() {
            let text = if cell.chars().count() > fit {
                let mut cut: String = cell.chars().take(fit - 1).collect();
                cut.push('.');
                cut
            } else {
                cell.clone()
            };
            self.push(Op::Text {
                x: MARGIN + column * i as f32,
                y,
                size: 10.0,
                bold,
                text,
            });
        }
        self
    }

    /// A thin horizontal rule.
    pub fn rule(&mut self) -> &mut Self {
        let y = self.advance(8.0) + 4.0;
        self.push(Op::Rule { y });
        self
    }

    /// Some vertical space.
    pub fn gap(&mut self) -> &mut Self {
        self.advance(8.0);
        self
    }

    /// The PDF file.
    pub fn to_pdf(&self) -> Vec<u8> {
        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let info = Ref::new(3);
        let fonts = [
            (Ref::new(4), b"F1".as_slice(), b"Helvetica".as_slice()),
            (Ref::new(5), b"F2", b"Helvetica-Bold"),
            (Ref::new(6), b"F3", b"Courier"),
            (Ref::new(7), b"F4", b"Courier-Bold"),
        ];
        let first_page = 8;
        let count = self.pages.len() as i32;
        let page_ids: Vec<Ref> = (0..count).map(|i| Ref::new(first_page + 2 * i)).collect();

        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree).kids(page_ids.iter().copied()).count(count);
        pdf.document_info(info)
            .title(TextStr(&self.title))
            .producer(TextStr("Switchyard"));
        for (id, _, base) in fonts {
            pdf.type1_font(id)
                .base_font(Name(base))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        for (i, ops) in self.pages.iter().enumerate() {
            let page_id = page_ids[i];
            let content_id = Ref::new(page_id.get() + 1);
            let mut page = pdf.page(page_id);
            page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT));
            page.parent(tree);
            page.contents(content_id);
            {
                let mut resources = page.resources();
                let mut names = resources.fonts();
                for (id, name, _) in fonts {
                    names.pair(Name(name), id);
                }
            }
            page.finish();

            let mut content = Content::new();
            for op in ops {
                match op {
                    Op::Text {
                        x,
                        y,
                        size,
                        bold,
                        text,
                    } => {
                        let font: &[u8] = if *bold { b"F2" } else { b"F1" };
                        content.begin_text();
                        content.set_font(Name(font), *size);
                        content.next_line(*x, *y);
                        content.show(Str(&win_ansi(text)));
                        content.end_text();
                    }
                    Op::Figure {
                        right,
                        y,
                        size,
                        bold,
                        text,
                    } => {
                        let font: &[u8] = if *bold { b"F4" } else { b"F3" };
                        let width = text.chars().count() as f32 * size * COURIER_ADVANCE;
                        content.begin_text();
                        content.set_font(Name(font), *size);
                        content.next_line(right - width, *y);
                        content.show(Str(&win_ansi(text)));
                        content.end_text();
                    }
                    Op::Rule { y } => {
                        content.set_line_width(0.5);
                        content.move_to(MARGIN, *y);
                        content.line_to(WIDTH - MARGIN, *y);
                        content.stroke();
                    }
                }
            }
            pdf.stream(content_id, &content.finish());
        }
        pdf.finish()
    }
}

/// Splits text into lines of at most `width` characters at spaces (a longer word is cut). Each character is looked
/// at once: a long value without spaces takes time in proportion to its length.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        // The line being filled and its length in characters.
        let (mut line, mut len) = (String::new(), 0);
        for word in paragraph.split_whitespace() {
            let word_len = word.chars().count();
            if len > 0 && len + 1 + word_len > width {
                lines.push(std::mem::take(&mut line));
                len = 0;
            }
            if word_len > width {
                // Cut into lines of `width`; the rest begins the next line.
                for c in word.chars() {
                    if len == width {
                        lines.push(std::mem::take(&mut line));
                        len = 0;
                    }
                    line.push(c);
                    len += 1;
                }
                continue;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            line.push_str(word);
            len += word_len;
        }
        lines.push(line);
    }
    lines
}

/// Text in the WinAnsi encoding of the standard fonts; what it cannot encode becomes `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '€' => 0x80,
            '‚' => 0x82,
            '„' => 0x84,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '™' => 0x99,
            '\t' => b' ',
            _ => b'?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_a_pdf_with_its_text_in_the_content_stream() {
        let mut doc = Doc::new("Receipt");
        doc.heading("Receipt", 16.0)
            .row("Time, 30 min", "2.40 EUR", false)
            .text("Grüße – 5 €");
        let bytes = doc.to_pdf();
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(bytes.ends_with(b"%%EOF") || bytes.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("(Time, 30 min) Tj"), "{text}");
        assert!(text.contains("(2.40 EUR) Tj"));
        // Non-ASCII text is written as a hex string of its WinAnsi bytes.
        assert!(
            text.to_lowercase().contains("<4772fcdf65209620352080>"),
            "{text}"
        );
    }

    #[test]
    fn long_documents_get_more_pages() {
        let mut doc = Doc::new("Long");
        for i in 0..200 {
            doc.row(&format!("line {i}"), "1.00", false);
        }
        assert!(doc.pages.len() >= 4);
        let bytes = doc.to_pdf();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&format!("/Count {}", doc.pages.len())));
        assert!(text.contains("(line 199) Tj"));
    }

    #[test]
    fn wrapping_keeps_words_and_cuts_only_overlong_ones() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(wrap("a abcdef b", 3), vec!["a", "abc", "def", "b"]);
        assert_eq!(wrap("ab abcd", 5), vec!["ab", "abcd"]);
        assert_eq!(wrap("ab abcdefg", 5), vec!["ab", "abcde", "fg"]);
        assert_eq!(wrap("x\n\ny", 5), vec!["x", "", "y"]);
        // A quarter of a mebibyte without a space: in lines of 90, each character looked at once.
        let long = "é".repeat(256 * 1024);
        let lines = wrap(&long, 90);
        assert_eq!(lines.len(), (256 * 1024usize).div_ceil(90));
        assert!(lines.iter().all(|l| l.chars().count() <= 90));
        assert_eq!(lines.concat(), long);
        assert_eq!(win_ansi("Жx"), b"?x");
    }
}
