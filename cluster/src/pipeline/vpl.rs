//! VPL subset: parses one Varpulis pipeline and evaluates it on JSON events.
//!
//! The cluster runs pipelines written in a small, strict subset of the
//! Varpulis pipeline language. Anything outside it is refused with a
//! [`VplError`] giving the 1-based line and column of the offending construct,
//! so a bad deployment fails up front (HTTP 400) rather than misbehaving later.
//!
//! ```text
//! program   := { sep } [ statement { sep { sep } statement } ] { sep }
//! sep       := newline | ';'
//! statement := event | stream
//! event     := 'event' NAME '{' [ field { ',' field } [ ',' ] ] '}'
//! field     := NAME ':' ( 'str' | 'float' | 'int' | 'bool' )
//! stream    := 'stream' NAME '=' NAME { '.' op }
//! op        := 'from'  '(' endpoint ')'   -- first op, only on an event type
//!            | 'where' '(' expr ')'       -- boolean filter, may repeat
//!            | 'to'    '(' endpoint ')'   -- sink, must be the last op
//! endpoint  := CONNECTOR { ',' NAME ':' value } [ ',' ]  -- topic: "..." required
//! expr      := and { ('or' | '||') and }
//! and       := cmp { ('and' | '&&') cmp }
//! cmp       := unary [ ('==' | '!=' | '<' | '<=' | '>' | '>=') unary ]
//! unary     := ('not' | '!' | '-') unary | primary
//! primary   := FIELD | INT | FLOAT | STRING | 'true' | 'false' | '(' expr ')'
//! ```
//!
//! Comments run from `#` or `//` to the end of the line; newlines inside
//! `(...)` and `{...}` are ignored so argument lists may wrap. Strings are
//! double-quoted, with the escapes `\"` and `\\`.
//!
//! `not` binds tighter than comparisons (like `!` in C or Rust): negate a
//! comparison as `not (t > 5.0)`; `not t > 5.0` is a type error. Comparisons
//! do not chain. Ints and floats compare numerically, strings with strings
//! (lexicographically), bools with bools (`==`/`!=` only).
//!
//! A stream may only name a stream declared above it, so the graph is acyclic
//! and every sink traces back to a `.from` source by construction. A program
//! needs at least one source and one sink. [`Program::process`] checks an
//! event against its source's event type, runs the filters, and forwards the
//! event unchanged to every sink it reaches.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// Deepest nesting of `(`, `not` and unary `-` in one expression. Parsing and
/// evaluation recurse once per level, so without a bound a hostile pipeline
/// (say 10 000 `(`) could overflow the stack of the thread serving the
/// request; real filters need a handful of levels.
pub const MAX_EXPR_DEPTH: usize = 64;

/// Words with a meaning of their own in expressions or payloads.
const RESERVED_FIELDS: [&str; 6] = ["and", "or", "not", "true", "false", "event_type"];

/// Punctuation and operators; two-character ones first so `<=` is not `<`.
const SYMBOLS: [&str; 19] = [
    "==", "!=", "<=", ">=", "&&", "||", "(", ")", "{", "}", ",", ":", ";", ".", "=", "<", ">", "!",
    "-",
];

/// A pipeline outside the supported subset, or inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("line {line}, column {column}: unsupported construct '{construct}': {message}")]
pub struct VplError {
    /// 1-based line of the offending construct.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// The offending source text, e.g. `.window`, `@`, `pattern`.
    pub construct: String,
    /// What is wrong and, where useful, what is accepted instead.
    pub message: String,
}

/// Why [`Program::process`] refused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    #[error("payload is not a JSON object")]
    NotJson,
    #[error("event_type {0} does not match the source's event type")]
    WrongEventType(String),
    #[error("missing field '{0}'")]
    MissingField(String),
    #[error("field '{0}' has the wrong JSON type")]
    BadFieldType(String),
    #[error("no source reads topic '{0}'")]
    UnknownTopic(String),
}

/// Type of an event field or of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Str,
    Float,
    Int,
    Bool,
}

impl Type {
    fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Spelled as in the source (`float`), not as the variant (`Float`).
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

/// `event Name { field: type, ... }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDecl {
    pub name: String,
    pub fields: Vec<(String, Type)>,
}

/// Where a stream's events come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamInput {
    /// `Event.from(...)`: read from a connector topic.
    Source(SourceSpec),
    /// Events of an earlier stream (`index` into [`Program::streams`]).
    Stream { name: String, index: usize },
}

/// One `stream` statement: its input, then filters, then an optional sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDef {
    pub name: String,
    pub event_type: String,
    pub input: StreamInput,
    pub filters: Vec<Expr>,
    pub sink: Option<SinkSpec>,
}

/// A source as a worker subscribes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub stream: String,
    pub event_type: String,
    pub connector: String,
    pub topic: String,
    pub params: BTreeMap<String, String>,
}

/// A sink as a worker publishes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSpec {
    pub stream: String,
    pub connector: String,
    pub topic: String,
    pub params: BTreeMap<String, String>,
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub topic: String,
    pub connector: String,
    pub payload: Vec<u8>,
}

/// A literal, or a field value during evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

const CMP_OPS: [(&str, CmpOp); 6] = [
    ("==", CmpOp::Eq),
    ("!=", CmpOp::Ne),
    ("<", CmpOp::Lt),
    ("<=", CmpOp::Le),
    (">", CmpOp::Gt),
    (">=", CmpOp::Ge),
];

impl CmpOp {
    fn of(tok: &Token) -> Option<CmpOp> {
        CMP_OPS.iter().find(|(s, _)| tok.is(s)).map(|&(_, op)| op)
    }

    fn accepts(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord.is_eq(),
            CmpOp::Ne => ord.is_ne(),
            CmpOp::Lt => ord.is_lt(),
            CmpOp::Le => ord.is_le(),
            CmpOp::Gt => ord.is_gt(),
            CmpOp::Ge => ord.is_ge(),
        }
    }
}

/// A type-checked filter. `and`/`or` are n-ary so long chains stay flat:
/// tree depth is bounded by [`MAX_EXPR_DEPTH`], not by expression length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Field(String, Type),
    Literal(Value),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    /// `None` only for ill-typed trees, which `parse` never builds; a
    /// deserialized program might hold one and must not panic either.
    fn eval(&self, record: &Map<String, Json>) -> Option<Value> {
        Some(match self {
            Expr::Field(name, ty) => return record.get(name).and_then(|v| from_json(v, *ty)),
            Expr::Literal(v) => v.clone(),
            Expr::Neg(e) => match e.eval(record)? {
                // i64::MIN has no i64 negation; the float is the honest answer.
                Value::Int(i) => i
                    .checked_neg()
                    .map_or(Value::Float(-(i as f64)), Value::Int),
                Value::Float(f) => Value::Float(-f),
                _ => return None,
            },
            Expr::Not(e) => match e.eval(record)? {
                Value::Bool(b) => Value::Bool(!b),
                _ => return None,
            },
            Expr::Compare(op, l, r) => {
                Value::Bool(compare(*op, &l.eval(record)?, &r.eval(record)?)?)
            }
            Expr::And(items) => Value::Bool(items.iter().all(|e| e.holds(record))),
            Expr::Or(items) => Value::Bool(items.iter().any(|e| e.holds(record))),
        })
    }

    fn holds(&self, record: &Map<String, Json>) -> bool {
        matches!(self.eval(record), Some(Value::Bool(true)))
    }
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Option<bool> {
    let ord = match (a, b) {
        // Int with int stays exact; only mixed numbers go through f64.
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        _ => return None,
    };
    // Unordered (NaN) is unequal to everything, as in IEEE 754.
    Some(ord.map_or(op == CmpOp::Ne, |o| op.accepts(o)))
}

/// A JSON value read as a declared type, `None` if it does not fit: an
/// integer fits a float field, but 1.5 (or 7.0) does not fit an int one.
fn from_json(v: &Json, ty: Type) -> Option<Value> {
    match ty {
        Type::Str => v.as_str().map(|s| Value::Str(s.to_owned())),
        Type::Int => v.as_i64().map(Value::Int),
        Type::Float => v.as_f64().map(Value::Float),
        Type::Bool => v.as_bool().map(Value::Bool),
    }
}

fn check_record(event: &EventDecl, record: &Map<String, Json>) -> Result<(), RejectReason> {
    match record.get("event_type") {
        None => {}
        Some(Json::String(s)) if *s == event.name => {}
        Some(Json::String(s)) => return Err(RejectReason::WrongEventType(s.clone())),
        Some(other) => return Err(RejectReason::WrongEventType(other.to_string())),
    }
    for (name, ty) in &event.fields {
        let v = record
            .get(name)
            .ok_or_else(|| RejectReason::MissingField(name.clone()))?;
        if from_json(v, *ty).is_none() {
            return Err(RejectReason::BadFieldType(name.clone()));
        }
    }
    Ok(())
}

/// A parsed and checked pipeline. Streams are in declaration order, which
/// is also a topological order (a stream's input always comes first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    events: Vec<EventDecl>,
    streams: Vec<StreamDef>,
}

impl Program {
    pub fn streams(&self) -> &[StreamDef] {
        &self.streams
    }

    pub fn sources(&self) -> Vec<SourceSpec> {
        let source = |s: &StreamDef| match &s.input {
            StreamInput::Source(spec) => Some(spec.clone()),
            StreamInput::Stream { .. } => None,
        };
        self.streams.iter().filter_map(source).collect()
    }

    pub fn sinks(&self) -> Vec<SinkSpec> {
        self.streams.iter().filter_map(|s| s.sink.clone()).collect()
    }

    /// Distinct source topics, in declaration order.
    pub fn input_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for s in self.sources() {
            if !topics.contains(&s.topic) {
                topics.push(s.topic);
            }
        }
        topics
    }

    /// Runs one event that arrived on `source_topic` (matched exactly) and
    /// returns one output per sink it reaches, carrying the input object
    /// unchanged (extra fields included), serialized compactly.
    ///
    /// If several sources read the topic, the event enters each whose event
    /// type it satisfies, and is rejected only if it satisfies none (with the
    /// first source's reason).
    pub fn process(&self, source_topic: &str, payload: &[u8]) -> Result<Vec<Output>, RejectReason> {
        let json: Json = serde_json::from_slice(payload).map_err(|_| RejectReason::NotJson)?;
        let Json::Object(record) = &json else {
            return Err(RejectReason::NotJson);
        };
        let (mut accepted, mut rejection) = (Vec::new(), None);
        for (i, s) in self.streams.iter().enumerate() {
            match &s.input {
                StreamInput::Source(spec) if spec.topic == source_topic => {}
                _ => continue,
            }
            let verdict = match self.events.iter().find(|e| e.name == s.event_type) {
                Some(event) => check_record(event, record),
                None => Err(RejectReason::WrongEventType(s.event_type.clone())),
            };
            match verdict {
                Ok(()) => accepted.push(i),
                Err(r) => _ = rejection.get_or_insert(r),
            }
        }
        if accepted.is_empty() {
            let unknown = || RejectReason::UnknownTopic(source_topic.to_owned());
            return Err(rejection.unwrap_or_else(unknown));
        }
        let bytes = serde_json::to_vec(&json).map_err(|_| RejectReason::NotJson)?;
        // One pass in declaration order decides each input before its readers.
        let mut reached: Vec<bool> = Vec::with_capacity(self.streams.len());
        let mut outputs = Vec::new();
        for (i, s) in self.streams.iter().enumerate() {
            let upstream = match &s.input {
                StreamInput::Source(_) => accepted.contains(&i),
                StreamInput::Stream { index, .. } => reached.get(*index) == Some(&true),
            };
            let passes = upstream && s.filters.iter().all(|f| f.holds(record));
            reached.push(passes);
            if let (true, Some(sink)) = (passes, &s.sink) {
                outputs.push(Output {
                    topic: sink.topic.clone(),
                    connector: sink.connector.clone(),
                    payload: bytes.clone(),
                });
            }
        }
        Ok(outputs)
    }
}

/// Parses and checks one pipeline; see the module docs for the subset.
pub fn parse(source: &str) -> Result<Program, VplError> {
    let lexer = Lexer {
        src: source,
        pos: 0,
        line: 1,
        column: 1,
        depth: 0,
    };
    let mut p = Parser {
        lexer,
        peeked: None,
        depth: 0,
        events: Vec::new(),
        streams: Vec::new(),
    };
    loop {
        let mut tok = p.bump()?;
        if tok.is_separator() {
            continue;
        }
        if tok.tok != Tok::Eof {
            p.statement(tok)?;
            tok = p.bump()?;
            if !tok.is_separator() && tok.tok != Tok::Eof {
                return Err(tok.error("expected the end of the statement (newline or ';')"));
            }
        }
        if tok.tok == Tok::Eof {
            let has = |f: fn(&StreamDef) -> bool| p.streams.iter().any(f);
            if !has(|s| matches!(s.input, StreamInput::Source(_))) {
                return Err(
                    tok.error("no source: add stream NAME = Event.from(connector, topic: \"...\")")
                );
            }
            if !has(|s| s.sink.is_some()) {
                return Err(
                    tok.error("no sink: add stream NAME = Stream.to(connector, topic: \"...\")")
                );
            }
            return Ok(Program {
                events: p.events,
                streams: p.streams,
            });
        }
    }
}

fn verr(at: (usize, usize), construct: impl Into<String>, message: impl Into<String>) -> VplError {
    let (construct, message) = (construct.into(), message.into());
    VplError {
        line: at.0,
        column: at.1,
        construct,
        message,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident,
    Int(i64),
    Float(f64),
    Str(String),
    Sym(&'static str),
    Newline,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// The source text, as shown in errors.
    text: String,
    /// (line, column), both 1-based.
    at: (usize, usize),
}

impl Token {
    fn is(&self, sym: &str) -> bool {
        matches!(self.tok, Tok::Sym(s) if s == sym)
    }

    fn is_word(&self, word: &str) -> bool {
        self.tok == Tok::Ident && self.text == word
    }

    fn is_separator(&self) -> bool {
        self.tok == Tok::Newline || self.is(";")
    }

    fn error(&self, message: impl Into<String>) -> VplError {
        let shown = match self.tok {
            Tok::Newline => "end of line",
            Tok::Eof => "end of input",
            _ => &self.text,
        };
        verr(self.at, shown, message)
    }
}

/// Produces tokens on demand, so errors surface in source order.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    column: usize,
    /// Open `(`/`{` count: newlines inside brackets do not end a statement.
    depth: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek_char(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn bump_char(&mut self) -> Option<char> {
        let c = self.peek_char(0)?;
        self.pos += c.len_utf8();
        (self.line, self.column) = if c == '\n' {
            (self.line + 1, 1)
        } else {
            (self.line, self.column + 1)
        };
        Some(c)
    }

    fn bump_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek_char(0).is_some_and(&pred) {
            self.bump_char();
        }
    }

    fn next_token(&mut self) -> Result<Token, VplError> {
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

    fn number(&mut self, start: usize, at: (usize, usize)) -> Result<Tok, VplError> {
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

    fn string(&mut self, at: (usize, usize)) -> Result<String, VplError> {
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

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    /// Current expression nesting, bounded by [`MAX_EXPR_DEPTH`].
    depth: usize,
    events: Vec<EventDecl>,
    streams: Vec<StreamDef>,
}

/// An expression with its static type.
type Typed = (Expr, Type);

/// Connector, topic and the other named arguments of `.from` / `.to`.
type Endpoint = (String, String, BTreeMap<String, String>);

impl Parser<'_> {
    fn peek(&mut self) -> Result<&Token, VplError> {
        let tok = match self.peeked.take() {
            Some(t) => t,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(tok))
    }

    fn bump(&mut self) -> Result<Token, VplError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn expect(&mut self, sym: &str) -> Result<Token, VplError> {
        let tok = self.bump()?;
        match tok.is(sym) {
            true => Ok(tok),
            false => Err(tok.error(format!("expected '{sym}'"))),
        }
    }

    fn expect_name(&mut self, what: &str) -> Result<Token, VplError> {
        let tok = self.bump()?;
        match tok.tok {
            Tok::Ident => Ok(tok),
            _ => Err(tok.error(format!("expected {what}"))),
        }
    }

    /// A name for a new event or stream; the two share one namespace so a
    /// stream reference is never ambiguous.
    fn new_name(&mut self, what: &str) -> Result<Token, VplError> {
        let tok = self.expect_name(what)?;
        let n = &tok.text;
        if self.events.iter().any(|e| &e.name == n) || self.streams.iter().any(|s| &s.name == n) {
            return Err(tok.error("name already declared"));
        }
        Ok(tok)
    }

    fn statement(&mut self, first: Token) -> Result<(), VplError> {
        match first.tok {
            Tok::Ident if first.text == "event" => self.event_decl(),
            Tok::Ident if first.text == "stream" => self.stream_decl(),
            Tok::Ident => Err(first.error("only 'event' and 'stream' statements are supported")),
            _ => Err(first.error("expected 'event' or 'stream'")),
        }
    }

    fn event_decl(&mut self) -> Result<(), VplError> {
        let name = self.new_name("an event name")?.text;
        self.expect("{")?;
        let mut fields: Vec<(String, Type)> = Vec::new();
        while !self.peek()?.is("}") {
            let field = self.expect_name("a field name or '}'")?;
            if RESERVED_FIELDS.contains(&field.text.as_str())
                || fields.iter().any(|f| f.0 == field.text)
            {
                return Err(field.error("reserved or duplicate field name"));
            }
            self.expect(":")?;
            let ty = self.expect_name("a field type")?;
            let ty = match ty.text.as_str() {
                "str" => Type::Str,
                "float" => Type::Float,
                "int" => Type::Int,
                "bool" => Type::Bool,
                _ => return Err(ty.error("unknown type; expected str, float, int or bool")),
            };
            fields.push((field.text, ty));
            if !self.peek()?.is("}") {
                self.expect(",")?;
            }
        }
        self.bump()?;
        self.events.push(EventDecl { name, fields });
        Ok(())
    }

    fn stream_decl(&mut self) -> Result<(), VplError> {
        let name = self.new_name("a stream name")?.text;
        self.expect("=")?;
        let base = self.expect_name("an event type or stream name")?;
        // Names are unique across events and streams, so `base` is one or the other.
        let index = self.streams.iter().position(|s| s.name == base.text);
        let event_type = index
            .and_then(|i| self.streams.get(i))
            .map_or(base.text.clone(), |s| s.event_type.clone());
        // Cloned so the expression parser can borrow `self` mutably.
        let event = self.events.iter().find(|e| e.name == event_type).cloned();
        let event =
            event.ok_or_else(|| base.error("unknown stream or event type (declare it above)"))?;
        let mut input = index.map(|index| StreamInput::Stream {
            name: base.text.clone(),
            index,
        });
        let mut sink = None;
        let mut filters = Vec::new();
        while self.peek()?.is(".") {
            let dot = self.bump()?;
            let text = format!(".{}", self.expect_name("an operation after '.'")?.text);
            // The whole `.name` is the construct: errors point at the dot.
            let op = Token { text, ..dot };
            let problem = match (op.text.as_str(), input.is_some(), sink.is_some()) {
                (".from" | ".where" | ".to", _, true) => "nothing may follow .to(...)",
                (".from", false, _) => {
                    let (connector, topic, params) = self.endpoint(&op)?;
                    let (stream, event_type) = (name.clone(), event_type.clone());
                    let spec = SourceSpec {
                        stream,
                        event_type,
                        connector,
                        topic,
                        params,
                    };
                    input = Some(StreamInput::Source(spec));
                    continue;
                }
                (".from", true, _) => ".from applies only directly to an event type",
                (".where" | ".to", false, _) => "an event type must first be read with .from(...)",
                (".where", true, _) => {
                    self.expect("(")?;
                    let start = self.peek()?.clone();
                    let (expr, ty) = self.or_expr(&event)?;
                    if ty != Type::Bool {
                        return Err(
                            start.error(format!("a .where condition must be bool, not {ty}"))
                        );
                    }
                    self.expect(")")?;
                    filters.push(expr);
                    continue;
                }
                (".to", true, _) => {
                    let (connector, topic, params) = self.endpoint(&op)?;
                    sink = Some(SinkSpec {
                        stream: name.clone(),
                        connector,
                        topic,
                        params,
                    });
                    continue;
                }
                _ => "only .from, .where and .to are supported",
            };
            return Err(op.error(problem));
        }
        let input =
            input.ok_or_else(|| base.error("an event type must be read with .from(...)"))?;
        self.streams.push(StreamDef {
            name,
            event_type,
            input,
            filters,
            sink,
        });
        Ok(())
    }

    /// `(connector, topic: "t", key: value, ...)` after `.from` / `.to`.
    fn endpoint(&mut self, op: &Token) -> Result<Endpoint, VplError> {
        self.expect("(")?;
        let conn = self.bump()?;
        let connector = match &conn.tok {
            Tok::Ident => conn.text.clone(),
            Tok::Str(s) => s.clone(),
            _ => return Err(conn.error("expected a connector name")),
        };
        let mut params = BTreeMap::new();
        loop {
            let tok = self.bump()?;
            if tok.is(")") {
                break;
            }
            if !tok.is(",") {
                return Err(tok.error("expected ',' or ')'"));
            }
            if self.peek()?.is(")") {
                continue; // trailing comma
            }
            let key = self.expect_name("an argument name")?;
            self.expect(":")?;
            let value = self.bump()?;
            let text = match &value.tok {
                Tok::Str(s) => s.clone(),
                Tok::Int(_) | Tok::Float(_) | Tok::Ident if key.text != "topic" => {
                    value.text.clone()
                }
                _ => return Err(value.error("expected a value (topic must be a string)")),
            };
            if params.insert(key.text.clone(), text).is_some() {
                return Err(key.error("duplicate argument"));
            }
        }
        match params.remove("topic") {
            Some(topic) if !topic.is_empty() => Ok((connector, topic, params)),
            _ => Err(op.error("needs a non-empty topic: \"...\"")),
        }
    }

    /// Guards one level of recursion; see [`MAX_EXPR_DEPTH`].
    fn enter(&mut self, tok: &Token) -> Result<(), VplError> {
        self.depth += 1;
        match self.depth > MAX_EXPR_DEPTH {
            true => Err(tok.error(format!(
                "expression nested deeper than {MAX_EXPR_DEPTH} levels"
            ))),
            false => Ok(()),
        }
    }

    fn or_expr(&mut self, ev: &EventDecl) -> Result<Typed, VplError> {
        self.bool_chain(ev, true)
    }

    /// `a or b or ...` (if `is_or`) or `a and b and ...`, flattened.
    fn bool_chain(&mut self, ev: &EventDecl, is_or: bool) -> Result<Typed, VplError> {
        let (word, sym) = if is_or { ("or", "||") } else { ("and", "&&") };
        let operand = |p: &mut Self| {
            if is_or {
                p.bool_chain(ev, false)
            } else {
                p.cmp_expr(ev)
            }
        };
        let (first, first_ty) = operand(self)?;
        let mut rest = Vec::new();
        while self.peek()?.is_word(word) || self.peek()?.is(sym) {
            let op = self.bump()?;
            let (rhs, ty) = operand(self)?;
            if first_ty != Type::Bool || ty != Type::Bool {
                return Err(op.error(format!("needs bool operands, not {first_ty} and {ty}")));
            }
            rest.push(rhs);
        }
        if rest.is_empty() {
            return Ok((first, first_ty));
        }
        rest.insert(0, first);
        let chain = if is_or {
            Expr::Or(rest)
        } else {
            Expr::And(rest)
        };
        Ok((chain, Type::Bool))
    }

    fn cmp_expr(&mut self, ev: &EventDecl) -> Result<Typed, VplError> {
        let (left, lt) = self.unary(ev)?;
        let Some(op) = CmpOp::of(self.peek()?) else {
            return Ok((left, lt));
        };
        let op_tok = self.bump()?;
        let (right, rt) = self.unary(ev)?;
        let same_kind = lt == rt && (lt == Type::Str || matches!(op, CmpOp::Eq | CmpOp::Ne));
        if !(lt.is_numeric() && rt.is_numeric() || same_kind) {
            return Err(op_tok.error(format!("cannot compare {lt} with {rt}")));
        }
        let next = self.peek()?;
        if CmpOp::of(next).is_some() {
            return Err(next.error("comparisons cannot be chained; combine them with 'and'"));
        }
        Ok((
            Expr::Compare(op, Box::new(left), Box::new(right)),
            Type::Bool,
        ))
    }

    fn unary(&mut self, ev: &EventDecl) -> Result<Typed, VplError> {
        let tok = self.peek()?.clone();
        let not = tok.is_word("not") || tok.is("!");
        if !not && !tok.is("-") {
            return self.primary(ev);
        }
        self.bump()?;
        self.enter(&tok)?;
        let (inner, ty) = self.unary(ev)?;
        self.depth -= 1;
        match (not, ty) {
            (true, Type::Bool) => Ok((Expr::Not(Box::new(inner)), ty)),
            (false, Type::Int | Type::Float) => Ok((Expr::Neg(Box::new(inner)), ty)),
            (true, _) => Err(tok.error(format!(
                "needs a bool, not {ty}; negate a comparison as not (a > b)"
            ))),
            (false, _) => Err(tok.error(format!("unary minus needs a number, not {ty}"))),
        }
    }

    fn primary(&mut self, ev: &EventDecl) -> Result<Typed, VplError> {
        let tok = self.bump()?;
        let literal = |v: Value, ty: Type| Ok((Expr::Literal(v), ty));
        match &tok.tok {
            Tok::Int(i) => literal(Value::Int(*i), Type::Int),
            Tok::Float(f) => literal(Value::Float(*f), Type::Float),
            Tok::Str(s) => literal(Value::Str(s.clone()), Type::Str),
            Tok::Ident if tok.text == "true" || tok.text == "false" => {
                literal(Value::Bool(tok.text == "true"), Type::Bool)
            }
            Tok::Ident if self.peek()?.is("(") => Err(verr(
                tok.at,
                format!("{}(", tok.text),
                "function calls are not supported",
            )),
            Tok::Ident => match ev.fields.iter().find(|(name, _)| *name == tok.text) {
                Some((name, ty)) => Ok((Expr::Field(name.clone(), *ty), *ty)),
                None => Err(tok.error(format!("unknown field of event '{}'", ev.name))),
            },
            Tok::Sym("(") => {
                self.enter(&tok)?;
                let inner = self.or_expr(ev)?;
                self.expect(")")?;
                self.depth -= 1;
                Ok(inner)
            }
            _ => Err(tok.error("expected a field, a literal or '('")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED: &str = r#"event SensorReading { sensor_id: str, temperature: float, seq: int }
stream Input = SensorReading.from(mqtt_1, topic: "e2e/input/1")
stream HighTemp = Input.where(temperature > 50.0)
stream Output = HighTemp.to(mqtt_1, topic: "e2e/output")
"#;

    fn reading(sensor: &str, temperature: Json, seq: Json) -> Json {
        json!({"event_type": "SensorReading", "sensor_id": sensor, "temperature": temperature,
               "seq": seq, "sent_at_us": 1_700_000_000_123_456_u64})
    }

    fn run(p: &Program, event: &Json) -> Result<Vec<Output>, RejectReason> {
        p.process("e2e/input/1", event.to_string().as_bytes())
    }

    /// Whether the seed pipeline, with `cond` as its filter, forwards `event`.
    fn passes(cond: &str, event: &Json) -> bool {
        let p = parse(&SEED.replace("temperature > 50.0", cond))
            .unwrap_or_else(|e| panic!("{cond}: {e}"));
        run(&p, event)
            .unwrap_or_else(|r| panic!("{cond}: {r}"))
            .len()
            == 1
    }

    /// (line, column, construct) of the error `source` must produce.
    fn err_at(source: &str) -> (usize, usize, String) {
        let e = parse(source)
            .err()
            .unwrap_or_else(|| panic!("expected an error for {source:?}"));
        (e.line, e.column, e.construct)
    }

    #[test]
    fn seed_has_one_source_and_one_sink() {
        let p = parse(SEED).expect("seed parses");
        let (connector, params) = ("mqtt_1".to_string(), BTreeMap::new());
        let source = SourceSpec {
            stream: "Input".into(),
            event_type: "SensorReading".into(),
            connector: connector.clone(),
            topic: "e2e/input/1".into(),
            params: params.clone(),
        };
        let sink = SinkSpec {
            stream: "Output".into(),
            connector,
            topic: "e2e/output".into(),
            params,
        };
        assert_eq!((p.sources(), p.sinks()), (vec![source], vec![sink]));
        assert_eq!(p.input_topics(), vec!["e2e/input/1".to_string()]);
    }

    #[test]
    fn forwards_hot_readings_unchanged_and_drops_the_rest() {
        let p = parse(SEED).expect("seed parses");
        let event = reading("sensor_1", json!(75.0), json!(7));
        let out = run(&p, &event).expect("valid event");
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].topic.as_str(), out[0].connector.as_str()),
            ("e2e/output", "mqtt_1")
        );
        assert_eq!(
            serde_json::from_slice::<Json>(&out[0].payload).ok(),
            Some(event)
        );
        assert!(!out[0].payload.contains(&b' '), "compact serialization");
        let count = |t: Json| run(&p, &reading("s", t, json!(1))).map(|o| o.len());
        assert_eq!(count(json!(25.0)), Ok(0));
        assert_eq!(count(json!(50.0)), Ok(0), "boundary: > is strict");
        assert_eq!(count(json!(75)), Ok(1), "an integer fits a float field");
    }

    #[test]
    fn precedence_and_operators() {
        let e = reading("s1", json!(75.0), json!(2));
        let cases = [
            (
                "temperature > 50.0 or seq == 1 and sensor_id == \"x\"",
                true,
            ),
            (
                "(temperature > 50.0 or seq == 1) and sensor_id == \"x\"",
                false,
            ),
            ("not false and false", false),
            ("not (false and false)", true),
            ("not (temperature > 50.0)", false),
            ("!(seq == 1) || temperature >= 75.0 && seq != 2", true),
            (
                "temperature >= 75 and temperature <= 75.0 and seq < 3 and seq > 1",
                true,
            ),
            ("seq == 2.0 and -temperature < -50.0", true),
            ("true == not false", true),
            ("sensor_id < \"s2\"", true),
        ];
        for (cond, expected) in cases {
            assert_eq!(passes(cond, &e), expected, "{cond}");
        }
    }

    #[test]
    fn string_equality_and_escapes() {
        let cond = "sensor_id == \"sensor_1\"";
        assert!(passes(cond, &reading("sensor_1", json!(1.0), json!(1))));
        assert!(!passes(cond, &reading("sensor_2", json!(1.0), json!(1))));
        assert!(passes(
            r#"sensor_id == "a\"b\\c""#,
            &reading("a\"b\\c", json!(1.0), json!(1))
        ));
    }

    #[test]
    fn chains_comments_separators_and_several_sinks() {
        let src = "# sensors\nevent E { v: int, ok: bool, }\n\n\
                   stream In = E.from(mqtt_1, topic: \"in\", qos: 1, client_id: \"c-1\") // src\n\
                   stream Pos = In.where(v > 0).where(ok); stream A = Pos.to(mqtt_1, topic: \"a\")\n\
                   stream B = In.where(v > 10).to(mqtt_2,\n    topic: \"b\")\n";
        let p = parse(src).unwrap_or_else(|e| panic!("{e}"));
        let params: Vec<_> = p.sources().into_iter().flat_map(|s| s.params).collect();
        let expected =
            [("client_id", "c-1"), ("qos", "1")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(params, expected);
        let topics = |payload: &str| -> Vec<String> {
            let out = p.process("in", payload.as_bytes()).expect("accepted");
            out.into_iter().map(|o| o.topic).collect()
        };
        assert_eq!(topics(r#"{"v": 20, "ok": true}"#), ["a", "b"]);
        assert_eq!(topics(r#"{"v": 5, "ok": true}"#), ["a"]);
        assert_eq!(topics(r#"{"v": 20, "ok": false}"#), ["b"]);
        assert!(topics(r#"{"v": -1, "ok": true}"#).is_empty());
    }

    #[test]
    fn errors_point_at_the_construct() {
        let head = "event SensorReading { sensor_id: str, temperature: float, seq: int }\n\
                    stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/1\")\n";
        let line3 = |l: &str| err_at(&format!("{head}{l}\n"));
        let e = parse(&format!("{head}stream W = Input.window(5s)\n")).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("line 3, column 17: unsupported construct '.window': only .from, .where and .to are supported")
        );
        let cases = [
            ("stream W = Input.window(5s)", 17, ".window"),
            ("stream S = Input.select(seq)", 17, ".select"),
            ("stream H = Input.where(humidity > 5.0)", 24, "humidity"),
            ("stream H = Nowhere.where(seq > 1)", 12, "Nowhere"),
            (
                "stream O = Input.to(mqtt_1, topic: \"e2e/out)",
                36,
                "\"e2e/out)",
            ),
            ("stream H = Input.where(seq @ 1)", 28, "@"),
            ("pattern P = Input -> Input", 1, "pattern"),
            ("emit Input", 1, "emit"),
            ("stream H = Input.where(sensor_id > 5)", 34, ">"),
            ("stream H = Input.where(not temperature > 1.0)", 24, "not"),
            ("stream H = Input.where(seq)", 24, "seq"),
            ("stream H = Input.where(seq > 1 and seq)", 32, "and"),
            ("stream H = Input.where(1 < seq < 3)", 32, "<"),
            ("stream H = Input.where(abs(seq) > 1)", 24, "abs("),
            ("stream H = Input.where(seq > 5s)", 30, "5s"),
            ("stream H = SensorReading.where(seq > 1)", 25, ".where"),
            ("stream H = Input.to(mqtt_1, qos: 1)", 17, ".to"),
            ("stream Input = Input.where(true)", 8, "Input"),
        ];
        for (src, column, construct) in cases {
            assert_eq!(line3(src), (3, column, construct.to_string()), "{src}");
        }
        let no_sink = err_at("event E { a: int }\nstream S = E.from(m, topic: \"t\")\n");
        assert_eq!(no_sink, (3, 1, "end of input".to_string()));
    }

    #[test]
    fn rejects_bad_events() {
        let p = parse(SEED).expect("seed parses");
        let raw = |s: &str| p.process("e2e/input/1", s.as_bytes());
        assert_eq!(raw("not json"), Err(RejectReason::NotJson));
        assert_eq!(raw("[1, 2]"), Err(RejectReason::NotJson));
        let missing = r#"{"sensor_id": "s", "temperature": 80.0}"#;
        assert_eq!(raw(missing), Err(RejectReason::MissingField("seq".into())));
        let mut e = reading("s", json!(80.0), json!("7"));
        assert_eq!(run(&p, &e), Err(RejectReason::BadFieldType("seq".into())));
        e["seq"] = json!(1.5);
        assert_eq!(run(&p, &e), Err(RejectReason::BadFieldType("seq".into())));
        e["seq"] = json!(1);
        e["event_type"] = json!("Other");
        assert_eq!(
            run(&p, &e),
            Err(RejectReason::WrongEventType("Other".into()))
        );
        let ok = reading("s", json!(80.0), json!(1)).to_string();
        let other = p.process("elsewhere", ok.as_bytes());
        assert_eq!(other, Err(RejectReason::UnknownTopic("elsewhere".into())));
    }

    #[test]
    fn program_survives_a_serde_round_trip() {
        let p = parse(SEED).expect("seed parses");
        let back: Program = serde_json::to_string(&p)
            .and_then(|s| serde_json::from_str(&s))
            .expect("round trip");
        assert_eq!(back, p);
        assert_eq!(
            run(&back, &reading("s", json!(60.0), json!(1))).map(|o| o.len()),
            Ok(1)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let open = SEED.replace("temperature > 50.0)", "");
        let deep = |s: &str| open.replacen(".where(", &format!(".where({}", s.repeat(10_000)), 1);
        let head = "event E { a: int }\nstream X = E.from(m, topic: \"t\")";
        let inputs = [
            String::new(),
            "\n\n# nothing\n".into(),
            "stream".into(),
            "stream X =".into(),
            "event E {".into(),
            "event E { a: int".into(),
            "event E { a: }".into(),
            "))))((((".into(),
            "\"".into(),
            "\\".into(),
            "é".into(),
            format!("{head}.where((a > 1)\n"),
            format!("{head}.where(a > 1))\n"),
            format!("{head}.where(a > 99999999999999999999)\n"),
            "(".repeat(10_000),
            deep("("),
            deep("not "),
            deep("-"),
            deep("!"),
        ];
        for src in &inputs {
            assert!(
                parse(src).is_err(),
                "should fail: {:?}",
                src.chars().take(80).collect::<String>()
            );
        }
        let e = parse(&deep("(")).err().map(|e| e.message);
        assert_eq!(
            e,
            Some(format!(
                "expression nested deeper than {MAX_EXPR_DEPTH} levels"
            ))
        );
    }
}
