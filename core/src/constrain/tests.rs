use super::grammar::{complete, prefix, Verdict};
use super::scope::SchemaIndex;
use crate::schema::Schema;

fn schema() -> SchemaIndex {
    SchemaIndex::new(
        &Schema::parse(
            "singer(Singer_ID number PK, Name text, Country text, Age number, Is_male others)\n\
             concert(concert_ID number PK, concert_Name text, Stadium_ID text, Year text)\n\
             singer_in_concert(concert_ID number PK -> concert.concert_ID, Singer_ID text -> singer.Singer_ID)\n\
             stadium(Stadium_ID number PK, Name text, Capacity number)",
        )
        .unwrap(),
    )
}

/// Every prefix of `sql` is accepted and the whole is a query.
fn accepted(sql: &str) {
    let s = schema();
    for (i, _) in sql.char_indices().skip(1) {
        assert_ne!(
            prefix(&s, &sql[..i]),
            Verdict::Invalid,
            "prefix `{}` of `{sql}`",
            &sql[..i]
        );
    }
    assert_ne!(prefix(&s, sql), Verdict::Invalid, "{sql}");
    assert!(complete(&s, sql), "whole: {sql}");
}

/// `before` is a valid prefix and `before + piece` is not.
fn refused_at(before: &str, piece: &str) {
    let s = schema();
    assert_ne!(prefix(&s, before), Verdict::Invalid, "{before}");
    let text = format!("{before}{piece}");
    assert_eq!(prefix(&s, &text), Verdict::Invalid, "{text}");
    assert!(!complete(&s, &text), "{text}");
}

#[test]
fn spider_style_queries_are_accepted_at_every_prefix() {
    for sql in [
        "SELECT count(*) FROM singer",
        "SELECT name ,  country ,  age FROM singer ORDER BY age DESC",
        "SELECT avg(age) ,  min(age) ,  max(age) FROM singer WHERE country  =  'France'",
        "SELECT T2.name ,  count(*) FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id  =  T2.singer_id GROUP BY T2.singer_id",
        "SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)",
        "SELECT country FROM singer WHERE age  >  40 INTERSECT SELECT country FROM singer WHERE age  <  30",
        "SELECT DISTINCT country FROM singer WHERE age  >  20",
        "SELECT name FROM stadium ORDER BY capacity DESC LIMIT 1",
        "SELECT T1.concert_name, T2.capacity FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id WHERE T1.year >= 2014",
        "SELECT count(DISTINCT country) FROM singer;",
        "SELECT name FROM singer WHERE name LIKE '%Hey%' AND age BETWEEN 20 AND 30",
        "SELECT year, count(*) AS n FROM concert GROUP BY year HAVING n > 1 ORDER BY n",
        "SELECT CASE WHEN age > 30 THEN 'old' ELSE 'young' END FROM singer",
        "SELECT x.country FROM (SELECT country FROM singer) AS x",
        "SELECT name FROM singer WHERE country = \"France\"",
        "SELECT T1.* FROM singer AS T1",
        "SELECT * FROM singer WHERE age IS NOT NULL LIMIT 3 OFFSET 1",
        "SELECT name FROM singer s WHERE EXISTS (SELECT 1 FROM singer_in_concert c WHERE c.singer_id = s.singer_id)",
        "SELECT CAST(age AS REAL) / 2 FROM singer",
        "SELECT name || ' ' || country FROM singer",
    ] {
        accepted(sql);
    }
}

#[test]
fn names_the_schema_lacks_are_refused_where_they_are_written() {
    refused_at("SELECT name FROM singer", "s ");
    refused_at("SELECT", " salary,");
    refused_at("SELECT T1.name FROM singer AS T1 WHERE T1.", "salary");
    refused_at("SELECT T1.name FROM singer AS T1 WHERE ", "T2.");
    // Checked once FROM binds the alias: concert has no `age`.
    refused_at("SELECT T1.age FROM concert AS T1", " ");
    // `name` is in singer and stadium: joining both makes it ambiguous for good.
    refused_at("SELECT name FROM singer JOIN ", "stadium ");
    // A column of a table that is not in FROM.
    refused_at("SELECT name FROM singer WHERE ", "capacity");
}

#[test]
fn writes_and_second_statements_are_refused() {
    let s = schema();
    for sql in [
        "SELECT name FROM singer; DROP TABLE singer",
        "SELECT name FROM singer; SELECT 1",
        "DELETE FROM singer",
        "SELECT name FROM singer -- comment",
        "SELECT randomblob(1000000000)",
        "SELECT load_extension('x')",
    ] {
        assert!(!complete(&s, sql), "{sql}");
    }
    assert_eq!(prefix(&s, "SELECT name FROM singer; "), Verdict::Ended);
    assert_eq!(prefix(&s, "SELECT name FROM singer; D"), Verdict::Invalid);
    assert_eq!(prefix(&s, "D"), Verdict::Invalid);
}

#[test]
fn a_query_is_whole_only_where_it_may_end() {
    let s = schema();
    for sql in [
        "SELECT",
        "SELECT name",
        "SELECT name FROM",
        "SELECT name FROM singer WHERE",
        "SELECT name FROM singer WHERE age >",
        "SELECT T1.name FROM singer AS T2",
        "SELECT name FROM singer WHERE name = 'Jo",
        "SELECT count(",
    ] {
        assert_ne!(prefix(&s, sql), Verdict::Invalid, "{sql}");
        assert!(!complete(&s, sql), "{sql}");
    }
}

#[test]
fn partial_names_pass_only_when_they_can_still_become_a_name() {
    let s = schema();
    assert_eq!(prefix(&s, "SELECT name FROM sin"), Verdict::Prefix);
    assert_eq!(prefix(&s, "SELECT name FROM xyz"), Verdict::Invalid);
    assert_eq!(prefix(&s, "SELECT name FROM singer WHERE ag"), Verdict::Prefix);
    assert_eq!(prefix(&s, "SELECT name FROM singer WHERE cap"), Verdict::Invalid);
    // Any word can still become an alias that FROM defines.
    assert_eq!(prefix(&s, "SELECT zz"), Verdict::Prefix);
    assert_eq!(prefix(&s, "SELECT name F"), Verdict::Prefix);
    assert_eq!(prefix(&s, "SELECT zz F"), Verdict::Invalid);
    assert_eq!(prefix(&s, "SELECT zz FROM"), Verdict::Invalid);
    assert_eq!(prefix(&s, "SELECT zz."), Verdict::Prefix);
    assert_eq!(prefix(&s, "SELECT zz.capacity, zz.age"), Verdict::Invalid);
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let s = schema();
    let sql = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(prefix(&s, &sql), Verdict::Invalid);
    assert!(!complete(&s, &sql));
}
