//! The parser and checker of the VPL subset: statements, endpoints, typed expressions.

use super::lexer::{Lexer, Tok, Token};
use super::*;

/// Parse and check a whole program (see [`super::parse`]).
pub(super) fn parse(source: &str) -> Result<Program, VplError> {
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
