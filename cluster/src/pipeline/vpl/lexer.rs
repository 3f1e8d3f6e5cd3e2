//! The lexer of the VPL subset: tokens with their 1-based line and column.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident,
    Int(i64),
    Float(f64),
    Str(String),
    Sym(&'static str),
    Newline,
    Eof,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// The source text, as shown in errors.
    pub(super) text: String,
    /// (line, column), both 1-based.
    pub(super) at: (usize, usize),
}

impl Token {
    pub(super) fn is(&self, sym: &str) -> bool {
        matches!(self.tok, Tok::Sym(s) if s == sym)
    }

    pub(super) fn is_word(&self, word: &str) -> bool {
        self.tok == Tok::Ident && self.text == word
    }

    pub(super) fn is_separator(&self) -> bool {
        self.tok == Tok::Newline || self.is(";")
    }

    pub(super) fn error(&self, message: impl Into<String>) -> VplError {
        let shown = match self.tok {
            Tok::Newline => "end of line",
            Tok::Eof => "end of input",
            _ => &self.text,
        };
        verr(self.at, shown, message)
    }
}

/// Produces tokens on demand, so errors surface in source order.
pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
    pub(super) line: usize,
    pub(super) column: usize,
    /// Open `(`/`{` count: newlines inside brackets do not end a statement.
    pub(super) depth: usize,
}

pub(super) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Lexer<'_> {
    pub(super) fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    pub(super) fn peek_char(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    pub(super) fn bump_char(&mut self) -> Option<char> {
        let c = self.peek_char(0)?;
        self.pos += c.len_utf8();
        (self.line, self.column) = if c == '\n' {
            (self.line + 1, 1)
        } else {
            (self.line, self.column + 1)
        };
        Some(c)
    }

    pub(super) fn bump_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek_char(0).is_some_and(&pred) {
            self.bump_char();
        }
    }

    pub(super) fn next_token(&mut self) -> Result<Token, VplError> {
        loop {
            let (start, at) = (self.pos, (self.line, self.column));
            let Some(c) = self.peek_char(0) else {
                return Ok(Token {
                    tok: Tok::Eof,
                    text: String::new(),
                    at,
                });
            };
            let tok = match c {
                '\n' if self.depth == 0 => {
                    self.bump_char();
                    Tok::Newline
                }
                ' ' | '\t' | '\r' | '\n' => {
                    self.bump_char();
                    continue;
                }
                '#' => {
                    self.bump_while(|c| c != '\n');
                    continue;
                }
                '/' if self.peek_char(1) == Some('/') => {
                    self.bump_while(|c| c != '\n');
                    continue;
                }
                '"' => Tok::Str(self.string(at)?),
                c if c.is_ascii_digit() => self.number(start, at)?,
                c if c.is_ascii_alphabetic() || c == '_' => {
                    self.bump_while(is_word_char);
                    Tok::Ident
                }
                _ => {
                    let Some(&sym) = SYMBOLS.iter().find(|s| self.rest().starts_with(**s)) else {
                        return Err(verr(at, c, "unexpected character"));
                    };
                    for _ in 0..sym.len() {
                        self.bump_char();
                    }
                    match sym {
                        "(" | "{" => self.depth += 1,
                        ")" | "}" => self.depth = self.depth.saturating_sub(1),
                        _ => {}
                    }
                    Tok::Sym(sym)
                }
            };
            let text = self.src.get(start..self.pos).unwrap_or("").to_owned();
            return Ok(Token { tok, text, at });
        }
    }

    pub(super) fn number(&mut self, start: usize, at: (usize, usize)) -> Result<Tok, VplError> {
        self.bump_while(|c| c.is_ascii_digit());
        let float =
            self.peek_char(0) == Some('.') && self.peek_char(1).is_some_and(|c| c.is_ascii_digit());
        if float {
            self.bump_char();
            self.bump_while(|c| c.is_ascii_digit());
        }
        // Swallow a suffix such as `5s` so it is reported whole, not as `5` then `s`.
        self.bump_while(is_word_char);
        let text = self.src.get(start..self.pos).unwrap_or("");
        let tok = if float {
            text.parse().ok().map(Tok::Float)
        } else {
            text.parse().ok().map(Tok::Int)
        };
        tok.ok_or_else(|| {
            verr(
                at,
                text,
                "bad number literal (out of range, or a unit such as 5s)",
            )
        })
    }

    pub(super) fn string(&mut self, at: (usize, usize)) -> Result<String, VplError> {
        self.bump_char(); // the opening quote
        let mut value = String::new();
        loop {
            let escape_at = (self.line, self.column);
            match self.bump_char() {
                Some('"') => return Ok(value),
                Some('\\') => match self.bump_char() {
                    Some(c @ ('"' | '\\')) => value.push(c),
                    Some(c) if c != '\n' => {
                        return Err(verr(
                            escape_at,
                            format!("\\{c}"),
                            "unknown escape; use \\\" or \\\\",
                        ))
                    }
                    _ => break,
                },
                Some(c) if c != '\n' => value.push(c),
                _ => break,
            }
        }
        Err(verr(
            at,
            format!("\"{value}"),
            "unterminated string literal",
        ))
    }
}
