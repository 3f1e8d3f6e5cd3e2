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

use lexer::Token;

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
    parser::parse(source)
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

mod lexer;
mod parser;
#[cfg(test)]
mod tests;
