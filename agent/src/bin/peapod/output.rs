//! Printing results: aligned tables for people, JSON or YAML for scripts.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as pretty JSON or YAML.
pub fn structured(value: &impl Serialize, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Yaml => serde_yaml_ng::to_string(value).context("encoding YAML")?,
        Format::Json | Format::Table => {
            serde_json::to_string_pretty(value).context("encoding JSON")? + "\n"
        }
    };
    print!("{text}");
    Ok(())
}

/// Columns padded to their widest cell, separated by three spaces as
/// kubectl and crictl do.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Sizes as `docker images` shows them: decimal units, three significant
/// digits (`4.19MB`, `812kB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    // Precision loss above 2^53 bytes does not matter for a display.
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 || unit == 0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    format!("{size:.digits$}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(812_000), "812kB");
        assert_eq!(human_size(4_190_000), "4.19MB");
        assert_eq!(human_size(12_500_000_000), "12.5GB");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["IMAGE", "TAG"]);
        table.row(vec!["docker.io/library/busybox".into(), "latest".into()]);
        table.row(vec!["x".into(), "1".into()]);
        assert_eq!(
            table.render(),
            "IMAGE                       TAG\n\
             docker.io/library/busybox   latest\n\
             x                           1\n"
        );
    }
}
