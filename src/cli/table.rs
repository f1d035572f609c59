//! Tabular output in patronictl's four formats: `pretty` (a boxed table like PrettyTable's, with
//! the title written into the top border), `tsv`, `json` and `yaml` (one record per row).
//!
//! Cells are JSON values so that the machine formats keep their types (a timeline stays a
//! number); the text formats print them, with mappings (member tags) as YAML: block style in
//! `pretty` (a multi-line cell, which draws a rule between every row, as PrettyTable does), flow
//! style in `tsv`. `json` is written as Python's `json.dumps` writes it (patronictl's output):
//! keys in column order, `", "` and `": "` separators, non-ASCII escaped, so that scripts
//! comparing text see no difference.

use std::io;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::ser::Formatter;
use serde_json::{Map, Value};

/// How a command prints its results (`-f`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Pretty,
    /// Tab-separated values, one header line.
    Tsv,
    /// JSON for programs.
    Json,
    /// YAML for programs and people.
    #[value(alias = "yml")]
    Yaml,
}

/// A table: column names, their alignment, rows of cells and an optional title.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Written into the top border in `pretty`, e.g. ` Cluster: pg (7301) `.
    pub title: Option<String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Columns aligned right in `pretty` (numbers).
    pub right: Vec<String>,
    /// One value per column in every row.
    pub rows: Vec<Vec<Value>>,
    /// In `json`/`yaml`, leave out cells that are empty strings or null (patronictl does this
    /// for member tables, where an absent lag is not a value).
    pub skip_empty: bool,
    /// Columns printed only in `tsv`/`json`/`yaml` (the cluster name, which `pretty` has in the
    /// title).
    pub machine_only: Vec<String>,
}

impl Table {
    /// A table with these columns and nothing else set.
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = S>) -> Table {
        Table { columns: columns.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Renders in `format`; the text ends with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Pretty => self.pretty(),
            Format::Tsv => self.tsv(),
            Format::Json => format!("{}\n", python_json(&self.ordered_records())),
            Format::Yaml => super::yaml::to_block(&Value::Array(self.records())),
        }
    }

    /// Rows as JSON objects keyed by column name.
    pub fn records(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let mut m = Map::new();
                for (c, v) in self.columns.iter().zip(row) {
                    let empty = v.is_null() || v.as_str() == Some("");
                    if !(self.skip_empty && empty) {
                        m.insert(c.clone(), v.clone());
                    }
                }
                Value::Object(m)
            })
            .collect()
    }

    /// Rows as (column, cell) pairs in column order, leaving out what [`Table::skip_empty`]
    /// leaves out.
    pub fn ordered_records(&self) -> Vec<OrderedRecord<'_>> {
        self.rows
            .iter()
            .map(|row| {
                OrderedRecord(
                    self.columns
                        .iter()
                        .zip(row)
                        .filter(|(_, v)| !(self.skip_empty && (v.is_null() || v.as_str() == Some(""))))
                        .map(|(c, v)| (c.as_str(), v))
                        .collect(),
                )
            })
            .collect()
    }

    /// Tab-separated: a header line, then one line per row.
    pub fn tsv(&self) -> String {
        let mut out = self.columns.join("\t");
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|v| cell_text(v, false).replace(['\t', '\n'], " ")).collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
        out
    }

    /// The boxed table.
    pub fn pretty(&self) -> String {
        let shown: Vec<usize> =
            (0..self.columns.len()).filter(|&i| !self.machine_only.contains(&self.columns[i])).collect();
        let header: Vec<String> = shown.iter().map(|&i| self.columns[i].clone()).collect();
        let cells: Vec<Vec<Vec<String>>> =
            self.rows.iter().map(|row| shown.iter().map(|&i| lines_of(&cell_text(&row[i], true))).collect()).collect();
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &cells {
            for (i, lines) in row.iter().enumerate() {
                for l in lines {
                    width[i] = width[i].max(l.chars().count());
                }
            }
        }
        let right: Vec<bool> = header.iter().map(|h| self.right.contains(h)).collect();
        let rule = {
            let mut r = String::from("+");
            for w in &width {
                r.push_str(&"-".repeat(w + 2));
                r.push('+');
            }
            r
        };
        let line = |vals: &[&str]| {
            let mut l = String::from("|");
            for (i, v) in vals.iter().enumerate() {
                let pad = width[i].saturating_sub(v.chars().count());
                if right[i] {
                    l.push_str(&format!(" {}{} |", " ".repeat(pad), v));
                } else {
                    l.push_str(&format!(" {}{} |", v, " ".repeat(pad)));
                }
            }
            l
        };
        let mut out = String::new();
        out.push_str(&with_title(&rule, self.title.as_deref()));
        out.push('\n');
        out.push_str(&line(&header.iter().map(String::as_str).collect::<Vec<_>>()));
        out.push('\n');
        out.push_str(&rule);
        out.push('\n');
        // A multi-line cell makes rows hard to tell apart: PrettyTable then rules every row.
        let rule_every_row = cells.iter().any(|r| r.iter().any(|c| c.len() > 1));
        for (n, row) in cells.iter().enumerate() {
            let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
            for k in 0..height {
                let vals: Vec<&str> = row.iter().map(|c| c.get(k).map(String::as_str).unwrap_or("")).collect();
                out.push_str(&line(&vals));
                out.push('\n');
            }
            if rule_every_row && n + 1 < cells.len() {
                out.push_str(&rule);
                out.push('\n');
            }
        }
        // Also under an empty table, as PrettyTable draws it (two rules in a row).
        out.push_str(&rule);
        out.push('\n');
        out
    }
}

/// One row as a JSON object whose keys keep the table's column order.
pub struct OrderedRecord<'a>(pub Vec<(&'a str, &'a Value)>);

impl Serialize for OrderedRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `value` as Python's `json.dumps(value)` writes it: `", "` between items, `": "` after keys,
/// every non-ASCII character as `\uXXXX` (UTF-16, as `ensure_ascii` does).
pub fn python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing JSON values into memory cannot fail.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// The separators and escaping of Python's `json.dumps` defaults.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `title` over the top border from its second character on, keeping the border's
/// length (and its `+` junctions past the title), as patronictl does.
fn with_title(rule: &str, title: Option<&str>) -> String {
    let Some(title) = title else { return rule.to_string() };
    let chars: Vec<char> = rule.chars().collect();
    let room = chars.len().saturating_sub(2);
    let t: Vec<char> = title.chars().take(room).collect();
    let mut out: String = chars[..1].iter().collect();
    out.extend(t.iter());
    out.extend(chars[1 + t.len()..].iter());
    out
}

fn lines_of(text: &str) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    text.lines().map(str::to_string).collect()
}

/// A value as one line of text (strings unquoted, null empty).
pub fn cell_text_flow(v: &Value) -> String {
    cell_text(v, false)
}

/// A cell as text: strings as they are, null as nothing, mappings and lists as YAML (block
/// style when `block`, else one line).
pub fn cell_text(v: &Value, block: bool) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) | Value::Array(_) if block => super::yaml::to_block(v).trim_end().to_string(),
        other => super::yaml::to_flow(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Table {
        Table {
            title: Some(" Cluster: pg (7301) ".into()),
            columns: ["Cluster", "Member", "TL", "Lag"].map(String::from).to_vec(),
            right: vec!["TL".into(), "Lag".into()],
            rows: vec![
                vec![json!("pg"), json!("a"), json!(2), json!("")],
                vec![json!("pg"), json!("bb"), json!(2), json!(4)],
            ],
            skip_empty: true,
            machine_only: vec!["Cluster".into()],
        }
    }

    #[test]
    fn pretty_has_the_title_in_the_border() {
        let t = sample().pretty();
        assert_eq!(
            t,
            "+ Cluster: pg (7301)+\n| Member | TL | Lag |\n+--------+----+-----+\n| a      |  2 |     |\n| bb     |  2 |   4 |\n+--------+----+-----+\n"
        );
        // Like patronictl, a title wider than the table is cut to fit.
        let mut wide = sample();
        wide.title = Some(" C ".into());
        assert!(wide.pretty().starts_with("+ C -----+----+-----+\n"), "junctions past the title stay");
    }

    #[test]
    fn multi_line_cells_rule_every_row() {
        let mut t = Table::new(["Member", "Tags"]);
        t.rows = vec![vec![json!("a"), json!({"nofailover": true, "zone": "x"})], vec![json!("b"), json!(null)]];
        assert_eq!(
            t.pretty(),
            "+--------+------------------+\n| Member | Tags             |\n+--------+------------------+\n\
             | a      | nofailover: true |\n|        | zone: x          |\n+--------+------------------+\n\
             | b      |                  |\n+--------+------------------+\n"
        );
        assert_eq!(t.tsv(), "Member\tTags\na\t{nofailover: true, zone: x}\nb\t\n");
    }

    #[test]
    fn machine_formats_keep_types_and_skip_empty_cells() {
        let t = sample();
        assert_eq!(
            t.render(Format::Json),
            "[{\"Cluster\": \"pg\", \"Member\": \"a\", \"TL\": 2}, {\"Cluster\": \"pg\", \"Member\": \"bb\", \"TL\": 2, \"Lag\": 4}]\n",
            "column order and Python's separators, as patronictl prints"
        );
        assert_eq!(
            t.render(Format::Yaml),
            "- Cluster: pg\n  Member: a\n  TL: 2\n- Cluster: pg\n  Lag: 4\n  Member: bb\n  TL: 2\n"
        );
        assert_eq!(t.render(Format::Tsv), "Cluster\tMember\tTL\tLag\npg\ta\t2\t\npg\tbb\t2\t4\n");
        // Nested values and non-ASCII text as Python's json.dumps writes them.
        assert_eq!(
            python_json(&json!([{"b": {"x": "é😀", "y": [1, 2]}}])),
            r#"[{"b": {"x": "\u00e9\ud83d\ude00", "y": [1, 2]}}]"#
        );
        let mut keep = sample();
        keep.skip_empty = false;
        assert_eq!(keep.records()[0]["Lag"], json!(""));
    }
}
