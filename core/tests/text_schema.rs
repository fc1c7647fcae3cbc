//! Schemas: Spider tables.json, CREATE TABLE DDL, the simple form, prompt
//! formats, errors with positions, and cutting to a budget.

mod common;
use common::shared;

use std::collections::HashSet;

use sqlora_core::schema::{Schema, SchemaFormat, SpiderTables};

fn spider() -> SpiderTables {
    SpiderTables::from_file(shared().join("data/spider/tables.json")).unwrap()
}

const CONCERT_SINGER_COMPACT: &str = "\
stadium(Stadium_ID number PK, Location text, Name text, Capacity number, Highest number, Lowest number, Average number)
singer(Singer_ID number PK, Name text, Country text, Song_Name text, Song_release_year text, Age number, Is_male others)
concert(concert_ID number PK, concert_Name text, Theme text, Stadium_ID text -> stadium.Stadium_ID, Year text)
singer_in_concert(concert_ID number PK -> concert.concert_ID, Singer_ID text -> singer.Singer_ID)";

#[test]
fn spider_tables_give_original_names_types_and_keys() {
    let t = spider();
    assert_eq!(t.len(), 166);
    assert_eq!(t.db_ids()[0], "perpetrator");
    let s = t.schema("concert_singer").unwrap();
    assert_eq!(s.tables.len(), 4);
    let singer = s.table("singer").unwrap();
    assert_eq!(singer.primary_key, vec!["Singer_ID"]);
    assert_eq!(singer.columns[5].name, "Age");
    assert_eq!(singer.columns[5].ty, "number");
    assert_eq!(s.foreign_keys.len(), 3);
    assert_eq!(s.to_compact(), CONCERT_SINGER_COMPACT);
    assert!(s.to_create_table().starts_with(
        "CREATE TABLE stadium (Stadium_ID number, Location text, Name text, Capacity number, Highest number, Lowest number, Average number, PRIMARY KEY (Stadium_ID));\n"
    ));
    assert!(s
        .to_create_table()
        .contains("FOREIGN KEY (Stadium_ID) REFERENCES stadium(Stadium_ID)"));
    // Names with spaces are quoted (perpetrator.people has "Home Town").
    let p = t.schema("perpetrator").unwrap().to_compact();
    assert!(p.contains("\"Home Town\" text"), "{p}");

    let err = t.schema("nope").unwrap_err().to_string();
    assert!(err.contains("no db_id `nope`"), "{err}");
}

#[test]
fn every_spider_schema_round_trips_through_both_formats() {
    // Foreign-key order is not meaningful (compact lists them by column).
    let norm = |mut s: Schema| {
        s.foreign_keys.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        s
    };
    let tables = spider();
    for id in tables.db_ids() {
        let s = norm(tables.schema(id).unwrap().clone());
        let compact = Schema::parse(&s.to_compact()).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(norm(compact), s, "{id} (compact)");
        let ddl = Schema::parse(&s.to_create_table()).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(norm(ddl), s, "{id} (DDL)");
    }
}

#[test]
fn spider_tables_errors_are_clear() {
    let err = SpiderTables::parse("[{\"db_id\": 1}]").unwrap_err().to_string();
    assert!(err.contains("tables.json"), "{err}");
    let bad = r#"[{"db_id":"x","table_names_original":["t"],"column_names_original":[[-1,"*"],[3,"a"]],"column_types":["text","text"],"primary_keys":[],"foreign_keys":[]}]"#;
    let err = SpiderTables::parse(bad).unwrap_err().to_string();
    assert!(err.contains("db_id `x`") && err.contains("table #3"), "{err}");
    let err = SpiderTables::from_file("/nonexistent/tables.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/tables.json"), "{err}");
}

#[test]
fn ddl_reads_inline_and_table_level_keys() {
    let ddl = r#"
        PRAGMA foreign_keys = ON;
        CREATE TABLE "stadium" ("Stadium_ID" int, "Name" text, PRIMARY KEY ("Stadium_ID"));
        INSERT INTO stadium VALUES (1, 'x;y');
        CREATE TABLE concert (
            concert_ID INTEGER PRIMARY KEY,   -- inline key
            Stadium_ID int REFERENCES stadium, /* no column: stadium's PK */
            Year varchar(4),
            note
        );
        CREATE INDEX i ON concert(Year);
        create table singer_in_concert (
            concert_ID int, Singer_ID int,
            PRIMARY KEY (concert_ID, Singer_ID),
            FOREIGN KEY (concert_ID) REFERENCES concert(concert_ID)
        )"#;
    let s = Schema::parse(ddl).unwrap();
    assert_eq!(s.tables.len(), 3);
    assert_eq!(s.tables[0].name, "stadium");
    assert_eq!(s.tables[0].primary_key, vec!["Stadium_ID"]);
    let c = s.table("concert").unwrap();
    assert_eq!(c.primary_key, vec!["concert_ID"]);
    assert_eq!(c.columns[0].ty, "INTEGER");
    assert_eq!(c.columns[2].ty, "varchar(4)", "types as written");
    assert_eq!(c.columns[3].ty, "", "a column without type");
    let sic = s.table("singer_in_concert").unwrap();
    assert_eq!(sic.primary_key, vec!["concert_ID", "Singer_ID"]);
    assert_eq!(s.foreign_keys.len(), 2);
    assert_eq!(s.foreign_keys[0].ref_table, "stadium");
    assert_eq!(s.foreign_keys[0].ref_columns, vec!["Stadium_ID"], "resolved to the PK");
    assert_eq!(
        s.to_compact(),
        "stadium(Stadium_ID int PK, Name text)\n\
         concert(concert_ID INTEGER PK, Stadium_ID int -> stadium.Stadium_ID, Year varchar(4), note)\n\
         singer_in_concert(concert_ID int PK -> concert.concert_ID, Singer_ID int PK)"
    );
    assert_eq!(Schema::parse(&s.to_compact()).unwrap(), s);
}

#[test]
fn spider_schema_sql_files_parse() {
    // The real DDL files Spider ships (with INSERTs, PRAGMAs, quoting styles).
    let dir = shared().join("data/spider/database");
    let mut ok = 0;
    let mut failures = Vec::new();
    let tables = spider();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path().join("schema.sql");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match Schema::from_ddl(&text) {
            Ok(s) => {
                ok += 1;
                // Table names agree with tables.json (case-insensitively).
                let id = path.parent().unwrap().file_name().unwrap().to_str().unwrap();
                if let Some(t) = tables.get(id) {
                    let a: HashSet<String> = s.tables.iter().map(|t| t.name.to_lowercase()).collect();
                    let b: HashSet<String> = t.tables.iter().map(|t| t.name.to_lowercase()).collect();
                    assert!(b.is_subset(&a) || a.is_subset(&b), "{id}: {a:?} vs {b:?}");
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    // All 146 files, including 5 that omit the comma between table
    // constraints (SQLite accepts that).
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(ok >= 146, "only {ok} schema.sql files found");
}

#[test]
fn simple_forms_parse() {
    let s = Schema::parse(
        "singer: singer_id, name text, age int PK\n\n# comment\nconcert(concert_id, singer_id -> singer.singer_id)",
    )
    .unwrap();
    assert_eq!(s.tables.len(), 2);
    let singer = s.table("singer").unwrap();
    assert_eq!(singer.columns.len(), 3);
    assert_eq!(singer.columns[0].ty, "");
    assert_eq!(singer.columns[1].ty, "text");
    assert_eq!(singer.primary_key, vec!["age"]);
    assert_eq!(s.foreign_keys[0].table, "concert");
    assert_eq!(s.foreign_keys[0].ref_table, "singer");
    assert_eq!(s.foreign_keys[0].ref_columns, vec!["singer_id"]);
}

#[test]
fn bad_text_gives_line_and_column() {
    let err = Schema::parse("singer: a, b\nconcert a, b").unwrap_err().to_string();
    assert!(err.contains("line 2, column 9"), "{err}");
    assert!(err.contains("expected `:` or `(`"), "{err}");

    let err = Schema::parse("t(a, b").unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("missing `)`"), "{err}");

    let err = Schema::parse("t: a,, b").unwrap_err().to_string();
    assert!(
        err.contains("line 1, column 6") && err.contains("empty column"),
        "{err}"
    );

    let err = Schema::parse("t: a\nt: b").unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("defined twice"), "{err}");

    let err = Schema::parse("CREATE TABLE t (a int,\n  b text,\n  c int c d e f)")
        .unwrap_err()
        .to_string();
    assert!(err.contains("Line: 3"), "{err}");

    let err = Schema::parse("CREATE TABLE t (a 'unterminated")
        .unwrap_err()
        .to_string();
    assert!(err.contains("DDL") && err.contains("Line: 1"), "{err}");

    let err = Schema::parse("   \n").unwrap_err().to_string();
    assert!(err.contains("no tables"), "{err}");
}

#[test]
fn fit_cuts_unrelated_tables_then_columns_never_mentioned_ones_first() {
    let s = spider().schema("concert_singer").unwrap().clone();
    let q = "What is the mean age of singers from France?";
    let full = s.render(SchemaFormat::Compact);

    // Everything fits: nothing cut.
    let f = s
        .fit(SchemaFormat::Compact, q, |t| Ok(t.len() <= full.len()))
        .unwrap()
        .unwrap();
    assert_eq!(f.text, full);
    assert!(!f.was_cut());

    // Just under the full length: the first cut is an unmentioned table, the
    // last one (singer_in_concert mentions "singer", so it is kept; concert goes).
    let f = s
        .fit(SchemaFormat::Compact, q, |t| Ok(t.len() < full.len()))
        .unwrap()
        .unwrap();
    assert_eq!(f.dropped_tables, 1);
    assert!(!f.text.contains("\nconcert("), "{}", f.text);
    assert!(f.text.contains("\nsinger("));
    assert!(!f.text.contains("-> concert."), "keys into dropped tables go too");

    // Tight budget: unmentioned tables, then unmentioned non-key columns, then
    // the last mentioned table go.
    let budget = "singer(Singer_ID number PK, Age number)";
    let f = s
        .fit(SchemaFormat::Compact, q, |t| Ok(t.len() <= budget.len()))
        .unwrap()
        .unwrap();
    assert_eq!(f.text, budget);
    assert_eq!(f.dropped_tables, 3);
    assert_eq!(f.dropped_columns, 5);

    // Nothing fits.
    assert!(s.fit(SchemaFormat::Compact, q, |_| Ok(false)).unwrap().is_none());
}
