//! SQL checks: parse errors, read-only, unknown tables/columns with aliases,
//! qualified names, `*`, CTEs; and every Spider dev gold query passes.

mod common;
use common::shared;

use sqlora_core::schema::{Schema, SpiderTables};
use sqlora_core::sqlcheck::check;

fn schema() -> Schema {
    Schema::parse(
        "CREATE TABLE singer (singer_id int PRIMARY KEY, name text, age int, country text);\n\
         CREATE TABLE concert (concert_id int PRIMARY KEY, year int);\n\
         CREATE TABLE singer_in_concert (concert_id int REFERENCES concert, singer_id int REFERENCES singer);",
    )
    .unwrap()
}

#[test]
fn good_queries_pass() {
    let s = schema();
    for sql in [
        "SELECT count(*) FROM singer",
        "select T1.name, T2.year from singer as T1 join singer_in_concert as T3 on T1.singer_id = T3.singer_id join concert T2 on T2.concert_id = T3.concert_id",
        "SELECT * FROM singer WHERE name = \"Joe\" ORDER BY age DESC LIMIT 1",
        "SELECT s.* FROM SINGER s",
        "SELECT country, count(*) AS n FROM singer GROUP BY country HAVING n > 1 ORDER BY n",
        "WITH old AS (SELECT name, age FROM singer WHERE age > 40) SELECT name FROM old",
        "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM singer_in_concert)",
        "SELECT name FROM singer s WHERE EXISTS (SELECT 1 FROM singer_in_concert c WHERE c.singer_id = s.singer_id)",
        "SELECT name FROM singer UNION SELECT CAST(year AS text) FROM concert",
        "SELECT t.n FROM (SELECT name AS n FROM singer) AS t",
        "SELECT name FROM singer;",
    ] {
        let c = check(sql, &s);
        assert!(c.is_ok(), "{sql}: {:?}", c.problems());
        assert!(c.problems().is_empty());
    }
}

#[test]
fn unknown_tables_and_columns_are_flagged() {
    let s = schema();
    let c = check("SELECT name, height FROM singer", &s);
    assert_eq!(c.unknown_columns, vec!["height"]);
    assert!(!c.is_ok());
    assert!(c.problems()[0].contains("unknown column `height`"));

    let c = check(
        "SELECT T1.title FROM singer AS T1 JOIN albums AS T2 ON T1.singer_id = T2.singer_id",
        &s,
    );
    assert_eq!(c.unknown_tables, vec!["albums"]);
    assert_eq!(
        c.unknown_columns,
        vec!["T1.title"],
        "albums' columns are not reported twice"
    );

    // An alias hides the table name (SQLite rejects `singer.name` here).
    let c = check("SELECT singer.name FROM singer AS s", &s);
    assert_eq!(c.unknown_columns, vec!["singer.name"]);

    // Qualified wildcard on a name not in FROM.
    let c = check("SELECT x.* FROM singer", &s);
    assert_eq!(c.unknown_columns, vec!["x.*"]);

    // A column from another table of the schema that is not in FROM.
    let c = check("SELECT year FROM singer", &s);
    assert_eq!(c.unknown_columns, vec!["year"]);

    // A CTE's name is a table; a missing one is not.
    let c = check("WITH a AS (SELECT 1) SELECT * FROM b", &s);
    assert_eq!(c.unknown_tables, vec!["b"]);
}

#[test]
fn writes_are_rejected_with_a_clear_error() {
    let s = schema();
    for (sql, verb) in [
        ("INSERT INTO singer VALUES (1, 'a', 2, 'b')", "INSERT"),
        ("UPDATE singer SET age = 1", "UPDATE"),
        ("DELETE FROM singer", "DELETE"),
        ("DROP TABLE singer", "DROP TABLE"),
        ("CREATE TABLE x (a int)", "CREATE TABLE"),
        ("SELECT 1; DELETE FROM singer", "DELETE"),
    ] {
        let c = check(sql, &s);
        assert!(!c.read_only, "{sql}");
        let e = c.write_error.clone().unwrap();
        assert!(e.starts_with(verb), "{sql}: {e}");
        assert!(e.contains("only read-only queries"), "{e}");
        assert!(!c.is_ok());
    }
    let c = check("SELECT 1; SELECT 2", &s);
    assert!(c.read_only);
    assert_eq!(c.statements, 2);
    assert!(c
        .problems()
        .iter()
        .any(|p| p.contains("expected one statement, found 2")));
}

#[test]
fn parse_errors_are_reported() {
    let s = schema();
    let c = check("SELECT name FROM singer WHERE age >", &s);
    let e = c.parse_error.clone().unwrap();
    assert!(e.contains("Expected"), "{e}");
    assert!(!c.is_ok());
    assert!(c.problems()[0].starts_with("does not parse"));
    assert_eq!(check("  ; ", &s).parse_error.as_deref(), Some("empty SQL"));
}

#[test]
fn spider_dev_gold_queries_all_check_ok() {
    let tables = SpiderTables::from_file(shared().join("data/spider/tables.json")).unwrap();
    let dev: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(shared().join("data/spider/dev.json")).unwrap()).unwrap();
    let mut bad = Vec::new();
    for ex in &dev {
        let sql = ex["query"].as_str().unwrap();
        let schema = tables.schema(ex["db_id"].as_str().unwrap()).unwrap();
        let c = check(sql, schema);
        if !c.is_ok() {
            bad.push(format!("{sql}: {:?}", c.problems()));
        }
    }
    assert_eq!(dev.len(), 1034);
    assert!(bad.is_empty(), "{} of 1034 flagged:\n{}", bad.len(), bad.join("\n"));
}
