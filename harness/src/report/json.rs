//! The layout of `run.json`: pretty-printed down to the third level of nesting; an element of a
//! list at the fourth level (a row of the history, `[seq, sent_at_us, acked_at_us]`, a cluster
//! event), and anything deeper (a trial's step, its latency list), stays on one line, so a run's
//! thousands of events take one line each.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// `value` as JSON in that layout.
pub fn to_vec(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, RowsFormatter::default());
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// A list's elements at this depth (the document itself is 1), and everything deeper, are
/// written on one line.
const ROW_DEPTH: usize = 4;

/// A [`PrettyFormatter`] that writes rows (see [`ROW_DEPTH`]) compactly.
#[derive(Default)]
struct RowsFormatter {
    pretty: PrettyFormatter<'static>,
    /// Open containers: `true` for a list.
    open: Vec<bool>,
    /// How many of the open containers are written compactly (the innermost ones).
    compact: usize,
}

impl RowsFormatter {
    /// Opens a container; whether it is compact.
    fn open(&mut self, list: bool) -> bool {
        let depth = self.open.len() + 1;
        let in_list = self.open.last() == Some(&true);
        let compact = depth > ROW_DEPTH || (depth == ROW_DEPTH && in_list);
        self.open.push(list);
        self.compact += usize::from(compact);
        compact
    }

    /// Closes a container; whether it was compact.
    fn close(&mut self) -> bool {
        self.open.pop();
        let compact = self.in_compact();
        self.compact = self.compact.saturating_sub(1);
        compact
    }

    fn in_compact(&self) -> bool {
        self.compact > 0
    }
}

impl Formatter for RowsFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.open(true) {
            true => w.write_all(b"["),
            false => self.pretty.begin_array(w),
        }
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.close() {
            true => w.write_all(b"]"),
            false => self.pretty.end_array(w),
        }
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        match self.in_compact() {
            true if first => Ok(()),
            true => w.write_all(b","),
            false => self.pretty.begin_array_value(w, first),
        }
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.in_compact() {
            true => Ok(()),
            false => self.pretty.end_array_value(w),
        }
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.open(false) {
            true => w.write_all(b"{"),
            false => self.pretty.begin_object(w),
        }
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.close() {
            true => w.write_all(b"}"),
            false => self.pretty.end_object(w),
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        match self.in_compact() {
            true if first => Ok(()),
            true => w.write_all(b","),
            false => self.pretty.begin_object_key(w, first),
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.in_compact() {
            true => w.write_all(b":"),
            false => self.pretty.begin_object_value(w),
        }
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.in_compact() {
            true => Ok(()),
            false => self.pretty.end_object_value(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_one_line_each() {
        let value = serde_json::json!({
            "name": "x",
            "history": {"rows": [[1, 2, null], [3, 4, {"a": [5]}]], "empty": []},
            "trials": [{"id": 1, "steps": [{"a": 1}], "events": {"latency": [1, 2]}}],
        });
        let text = String::from_utf8(to_vec(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n  \"history\": {\n    \"empty\": [],\n    \"rows\": [\n      [1,2,null],\n      \
             [3,4,{\"a\":[5]}]\n    ]\n  },\n  \"name\": \"x\",\n  \"trials\": [\n    {\n      \
             \"events\": {\n        \"latency\": [1,2]\n      },\n      \"id\": 1,\n      \
             \"steps\": [\n        {\"a\":1}\n      ]\n    }\n  ]\n}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
