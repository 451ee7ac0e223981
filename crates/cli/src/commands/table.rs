//! The one table writer behind every table the CLI prints (`list`, `get
//! deployments`, `get bases`): columns as wide as their widest cell, three
//! spaces apart, so no two columns ever touch.

/// Rows of cells under a header, printed aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Space between two columns.
const GAP: &str = "   ";

impl Table {
    /// A table with these column titles.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column; missing cells print empty).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }

    /// Prints the table on stdout, each line after `indent` (a table inside
    /// a `describe`).
    pub fn print_indented(&self, indent: &str) {
        for line in self.render().lines() {
            println!("{indent}{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_never_touch_and_align() {
        let mut t = Table::new(["NAME", "UP-TO-DATE", "GENERATION", "LABELS"]);
        t.row(["orders", "4", "1", "group=online,zone=a"]);
        t.row(["a-much-longer-name", "12345678901", "7", ""]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every column starts at the same offset on every line.
        for title in ["UP-TO-DATE", "GENERATION", "LABELS"] {
            let at = lines[0].find(title).unwrap();
            assert_eq!(&lines[0][at - 3..at], "   ", "{text}");
        }
        let gen_at = lines[0].find("GENERATION").unwrap();
        assert_eq!(&lines[1][gen_at..gen_at + 1], "1", "{text}");
        assert_eq!(&lines[2][gen_at..gen_at + 1], "7", "{text}");
        assert!(lines[2].contains("12345678901   7"), "{text}");
        assert!(!text.lines().any(|l| l.ends_with(' ')), "{text}");
    }
}
