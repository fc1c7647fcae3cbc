//! Example schemas the page offers. Schemas only (no rows): the model needs the
//! tables and columns, and the page checks generated SQL against them.

pub struct Example {
    pub name: &'static str,
    pub schema: &'static str,
    pub question: &'static str,
}

/// Spider's `concert_singer` database, written as CREATE TABLE statements.
pub const CONCERT_SINGER: &str = "\
CREATE TABLE stadium (
  Stadium_ID int PRIMARY KEY,
  Location text,
  Name text,
  Capacity int,
  Highest int,
  Lowest int,
  Average int
);
CREATE TABLE singer (
  Singer_ID int PRIMARY KEY,
  Name text,
  Country text,
  Song_Name text,
  Song_release_year text,
  Age int,
  Is_male bool
);
CREATE TABLE concert (
  concert_ID int PRIMARY KEY,
  concert_Name text,
  Theme text,
  Stadium_ID text REFERENCES stadium(Stadium_ID),
  Year text
);
CREATE TABLE singer_in_concert (
  concert_ID int REFERENCES concert(concert_ID),
  Singer_ID text REFERENCES singer(Singer_ID),
  PRIMARY KEY (concert_ID, Singer_ID)
);
";

pub const EXAMPLES: &[Example] = &[
    Example { name: "concert_singer (Spider)", schema: CONCERT_SINGER, question: "How many singers do we have?" },
    Example {
        name: "shop (simple form)",
        schema: "customers: id, name, city, joined_at\norders: id, customer_id, total, created_at\nproducts: id, name, price\n",
        question: "Which city has the most customers?",
    },
    Example {
        name: "employees",
        schema: "\
CREATE TABLE department (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  budget REAL
);
CREATE TABLE employee (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  salary REAL,
  department_id INTEGER REFERENCES department(id)
);
",
        question: "What is the average salary in each department?",
    },
];
