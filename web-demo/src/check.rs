//! Checks shown beside the schema and under the SQL: does the pasted schema
//! parse, and does the generated SQL parse and name only known tables and
//! columns. Adapters over sqlora-core's schema and SQL-check modules.

use sqlora_core::schema::Schema;
use sqlora_core::sqlcheck;

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

/// Parse pasted schema text the way the prompt will (core's `Schema::parse`).
pub fn summarize(schema: &str) -> Result<SchemaSummary, String> {
    let parsed = Schema::parse(schema).map_err(|e| e.to_string())?;
    if parsed.tables.is_empty() {
        return Err("no table found: write `CREATE TABLE t (a, b);` or `t: a, b`".into());
    }
    Ok(SchemaSummary {
        tables: parsed.tables.len(),
        columns: parsed.tables.iter().map(|t| t.columns.len()).sum(),
    })
}

/// Check generated SQL against the pasted schema (core's `sqlcheck`): it must
/// parse, be one read-only statement, and name only known tables and columns.
pub fn check(schema: &str, sql: &str) -> CheckReport {
    let schema = match Schema::parse(schema) {
        Ok(s) => s,
        Err(e) => {
            return CheckReport {
                ok: false,
                summary: "the schema does not parse".into(),
                issues: vec![e.to_string()],
            }
        }
    };
    let found = sqlcheck::check(sql, &schema);
    let ok = found.is_ok();
    let summary = if ok {
        "parses and uses only tables and columns of the schema".to_string()
    } else if found.parse_error.is_some() {
        "does not parse".to_string()
    } else {
        "problems found".to_string()
    };
    CheckReport {
        ok,
        summary,
        issues: found.problems(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_schemas_parse() {
        for ex in crate::examples::EXAMPLES {
            let s = summarize(ex.schema).unwrap_or_else(|e| panic!("{}: {e}", ex.name));
            assert!(s.tables >= 2 && s.columns >= s.tables, "{}: {s:?}", ex.name);
        }
        assert_eq!(
            summarize(crate::examples::CONCERT_SINGER).unwrap(),
            SchemaSummary { tables: 4, columns: 21 }
        );
    }

    #[test]
    fn sql_is_checked_against_the_schema() {
        let schema = crate::examples::CONCERT_SINGER;
        let good = check(schema, "SELECT count(*) FROM singer");
        assert!(good.ok && good.issues.is_empty(), "{good:?}");
        let unknown = check(schema, "SELECT nickname FROM singers");
        assert!(!unknown.ok);
        assert!(unknown.issues.iter().any(|i| i.contains("singers")), "{unknown:?}");
        let broken = check(schema, "SELEC name FROM");
        assert_eq!(broken.summary, "does not parse");
        assert!(!check(schema, "DELETE FROM singer").ok);
    }

    #[test]
    fn bad_schema_is_an_error() {
        assert!(summarize("").is_err());
        assert!(summarize("CREATE TABLE (").is_err());
    }
}
