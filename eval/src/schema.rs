//! Schemas as the official scorer sees them: table and column names read from
//! the SQLite file (lower-cased), and foreign-key classes from tables.json.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Table → columns (lower-cased) plus the official identifier map
/// (`t.c` → `__t.c__`, `t` → `__t__`, `*` → `__all__`).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: HashMap<String, Vec<String>>,
    id_map: HashMap<String, String>,
}

impl Schema {
    pub fn new(tables: HashMap<String, Vec<String>>) -> Self {
        let mut id_map = HashMap::from([("*".to_string(), "__all__".to_string())]);
        for (table, cols) in &tables {
            for col in cols {
                id_map.insert(format!("{table}.{col}"), format!("__{table}.{col}__"));
            }
            id_map.insert(table.clone(), format!("__{table}__"));
        }
        Schema { tables, id_map }
    }

    /// Read table and column names from a SQLite file (read-only), as the
    /// official `get_schema` does.
    pub fn from_sqlite(path: &Path) -> Result<Self> {
        let sqlite_err = |source| Error::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(sqlite_err)?;
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type='table'")
            .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(sqlite_err)?;
        let mut tables = HashMap::new();
        for name in names {
            let cols: Vec<String> = conn
                .prepare(&format!("PRAGMA table_info(\"{}\")", name.replace('"', "\"\"")))
                .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(1))?.collect())
                .map_err(sqlite_err)?;
            tables.insert(name.to_lowercase(), cols.iter().map(|c| c.to_lowercase()).collect());
        }
        Ok(Schema::new(tables))
    }

    /// The official identifier of a `table.column`, `table` or `*` key.
    pub fn id(&self, key: &str) -> Option<&str> {
        self.id_map.get(key).map(String::as_str)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.id_map.values().map(String::as_str)
    }
}

/// One database entry of Spider's tables.json (the fields the scorer needs).
#[derive(Debug, Clone, Deserialize)]
pub struct TableEntry {
    pub db_id: String,
    pub table_names_original: Vec<String>,
    pub column_names_original: Vec<(i64, String)>,
    #[serde(default)]
    pub column_types: Vec<String>,
    #[serde(default)]
    pub foreign_keys: Vec<(usize, usize)>,
    #[serde(default)]
    pub primary_keys: Vec<serde_json::Value>,
}

impl TableEntry {
    /// Official foreign-key map: every column of a foreign-key class maps to
    /// the class member with the smallest column index.
    pub fn foreign_key_map(&self) -> HashMap<String, String> {
        let cols: Vec<String> = self
            .column_names_original
            .iter()
            .map(
                |(t, c)| match usize::try_from(*t).ok().and_then(|t| self.table_names_original.get(t)) {
                    Some(table) => format!("__{}.{}__", table.to_lowercase(), c.to_lowercase()),
                    None => "__all__".to_string(),
                },
            )
            .collect();
        // Classes are grown greedily in tables.json order, like upstream
        // (a key pair joins the first class holding either key).
        let mut classes: Vec<HashSet<usize>> = Vec::new();
        for &(k1, k2) in &self.foreign_keys {
            let pos = classes.iter().position(|s| s.contains(&k1) || s.contains(&k2));
            let class = match pos {
                Some(p) => &mut classes[p],
                None => {
                    classes.push(HashSet::new());
                    classes.last_mut().expect("just pushed")
                }
            };
            class.insert(k1);
            class.insert(k2);
        }
        let mut map = HashMap::new();
        for class in classes {
            let mut members: Vec<usize> = class.into_iter().collect();
            members.sort_unstable();
            let root = members[0];
            for idx in members {
                if let (Some(col), Some(target)) = (cols.get(idx), cols.get(root)) {
                    map.insert(col.clone(), target.clone());
                }
            }
        }
        map
    }

    /// Lower-cased `table -> columns` as declared in tables.json.
    pub fn declared_columns(&self) -> HashMap<String, HashSet<String>> {
        let mut out: HashMap<String, HashSet<String>> = self
            .table_names_original
            .iter()
            .map(|t| (t.to_lowercase(), HashSet::new()))
            .collect();
        for (t, c) in &self.column_names_original {
            if let Some(table) = usize::try_from(*t).ok().and_then(|t| self.table_names_original.get(t)) {
                out.entry(table.to_lowercase()).or_default().insert(c.to_lowercase());
            }
        }
        out
    }
}

/// All entries of a tables.json, by `db_id`.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub entries: HashMap<String, TableEntry>,
}

impl Tables {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let entries: Vec<TableEntry> = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Tables {
            entries: entries.into_iter().map(|e| (e.db_id.clone(), e)).collect(),
        })
    }

    pub fn get(&self, db_id: &str) -> Result<&TableEntry> {
        self.entries
            .get(db_id)
            .ok_or_else(|| Error::UnknownDb(db_id.to_string()))
    }
}

/// `<db_dir>/<db_id>/<db_id>.sqlite`, the Spider layout.
pub fn sqlite_path(db_dir: &Path, db_id: &str) -> PathBuf {
    db_dir.join(db_id).join(format!("{db_id}.sqlite"))
}
