//! The layout of `run.json`: pretty-printed, except that an array inside an array (a row of the
//! history, `[seq, sent_at_us, acked_at_us]`) stays on one line, so a run's thousands of events
//! take one short line each.

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

/// A [`PrettyFormatter`] that writes an array opened inside an array, and all it holds, compactly.
#[derive(Default)]
struct RowsFormatter {
    pretty: PrettyFormatter<'static>,
    /// Open containers: `true` for an array.
    open: Vec<bool>,
    /// How many of the open containers are written compactly (the innermost ones).
    compact: usize,
}

impl RowsFormatter {
    /// Opens a container; whether it is compact: inside a compact one, or an array directly in
    /// an array (objects in an array, such as trials, stay pretty).
    fn open(&mut self, array: bool) -> bool {
        let compact = self.compact > 0 || (array && self.open.last() == Some(&true));
        self.open.push(array);
        self.compact += usize::from(compact);
        compact
    }

    /// Closes a container; whether it was compact.
    fn close(&mut self) -> bool {
        self.open.pop();
        let compact = self.compact > 0;
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
            "rows": [[1, 2, null], [3, 4, {"a": [5]}]],
            "objects": [{"a": 1}],
            "list": [1, 2],
            "empty": [],
        });
        let text = String::from_utf8(to_vec(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n  \"empty\": [],\n  \"list\": [\n    1,\n    2\n  ],\n  \"name\": \"x\",\n  \
             \"objects\": [\n    {\n      \"a\": 1\n    }\n  ],\n  \
             \"rows\": [\n    [1,2,null],\n    [3,4,{\"a\":[5]}]\n  ]\n}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
