//! Checks shown beside the schema and under the SQL: does the pasted schema
//! parse, and does the generated SQL parse and name only known tables and
//! columns. Adapters over sqlora-core's schema and SQL-check modules.

#[derive(Debug, Clone, PartialEq)]
pub struct SchemaSummary {
    pub tables: usize,
    pub columns: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Parses, and names only known tables and columns.
    pub ok: bool,
    /// One line for the page.
    pub summary: String,
    pub issues: Vec<String>,
}

// TEMPORARY until sqlora_core::schema / sqlcheck land: a line-based reading of
// the schema so the page can show something; the SQL check reports itself as
// unavailable rather than pretending.
pub fn summarize(schema: &str) -> Result<SchemaSummary, String> {
    let text = schema.trim();
    if text.is_empty() {
        return Err(
            "the schema is empty: paste CREATE TABLE statements or `table: col, col` lines".into(),
        );
    }
    let tables = text.to_ascii_lowercase().matches("create table").count()
        + text
            .lines()
            .filter(|l| l.contains(':') && !l.trim_start().starts_with("--"))
            .count();
    if tables == 0 {
        return Err("no table found: write `CREATE TABLE t (a, b);` or `t: a, b`".into());
    }
    Ok(SchemaSummary { tables, columns: 0 })
}

pub fn check(_schema: &str, sql: &str) -> CheckReport {
    let ok = sql.trim_start().to_ascii_lowercase().starts_with("select");
    CheckReport {
        ok,
        summary: if ok {
            "looks like a SELECT (full check pending)".into()
        } else {
            "not a SELECT".into()
        },
        issues: Vec::new(),
    }
}
