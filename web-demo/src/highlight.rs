//! A small SQL lexer for syntax highlighting: enough to colour keywords,
//! identifiers, strings, numbers and punctuation. It never fails; anything it
//! does not recognise becomes punctuation, and the pieces always concatenate
//! back to the input.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keyword,
    Function,
    Ident,
    String,
    Number,
    Punct,
    Space,
}

impl Kind {
    /// The CSS class the page styles.
    pub fn class(self) -> &'static str {
        match self {
            Kind::Keyword => "kw",
            Kind::Function => "fn",
            Kind::Ident => "id",
            Kind::String => "str",
            Kind::Number => "num",
            Kind::Punct => "p",
            Kind::Space => "sp",
        }
    }
}

const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "group",
    "by",
    "order",
    "having",
    "limit",
    "offset",
    "join",
    "inner",
    "left",
    "right",
    "outer",
    "full",
    "cross",
    "on",
    "as",
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "like",
    "between",
    "distinct",
    "union",
    "all",
    "intersect",
    "except",
    "asc",
    "desc",
    "case",
    "when",
    "then",
    "else",
    "end",
    "exists",
    "insert",
    "into",
    "values",
    "update",
    "set",
    "delete",
    "create",
    "table",
    "primary",
    "key",
    "foreign",
    "references",
    "with",
];
const FUNCTIONS: &[&str] = &[
    "count", "sum", "avg", "min", "max", "abs", "length", "lower", "upper", "round",
];

/// Split `sql` into highlighted pieces.
pub fn tokens(sql: &str) -> Vec<(Kind, &str)> {
    let mut out = Vec::new();
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            c if c.is_whitespace() => rest.find(|c: char| !c.is_whitespace()).unwrap_or(rest.len()),
            '\'' | '"' | '`' => quoted_len(rest, c),
            c if c.is_ascii_digit() => rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len()),
            c if c.is_alphabetic() || c == '_' => rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len()),
            c => c.len_utf8(),
        };
        let (piece, tail) = rest.split_at(len);
        out.push((kind_of(piece), piece));
        rest = tail;
    }
    out
}

/// Length of a quoted string or identifier, closing quote included (or to the end).
fn quoted_len(s: &str, quote: char) -> usize {
    match s[1..].find(quote) {
        Some(i) => i + 2,
        None => s.len(),
    }
}

fn kind_of(piece: &str) -> Kind {
    let c = piece.chars().next().unwrap_or(' ');
    if c.is_whitespace() {
        Kind::Space
    } else if c == '\'' {
        Kind::String
    } else if c == '"' || c == '`' {
        Kind::Ident
    } else if c.is_ascii_digit() {
        Kind::Number
    } else if c.is_alphabetic() || c == '_' {
        let lower = piece.to_ascii_lowercase();
        if KEYWORDS.contains(&lower.as_str()) {
            Kind::Keyword
        } else if FUNCTIONS.contains(&lower.as_str()) {
            Kind::Function
        } else {
            Kind::Ident
        }
    } else {
        Kind::Punct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_a_query() {
        let sql = "SELECT count(*) FROM singer WHERE name = 'Joe''s' AND age > 30.5";
        let t = tokens(sql);
        assert_eq!(t.iter().map(|(_, s)| *s).collect::<String>(), sql);
        let find = |s: &str| t.iter().find(|(_, p)| *p == s).map(|(k, _)| *k);
        assert_eq!(find("SELECT"), Some(Kind::Keyword));
        assert_eq!(find("count"), Some(Kind::Function));
        assert_eq!(find("singer"), Some(Kind::Ident));
        assert_eq!(find("'Joe'"), Some(Kind::String));
        assert_eq!(find("30.5"), Some(Kind::Number));
        assert_eq!(find("*"), Some(Kind::Punct));
    }

    #[test]
    fn unterminated_string_and_unicode_do_not_panic() {
        for sql in ["SELECT 'abc", "SELECT \"é\" FROM t", "é€ ;", ""] {
            assert_eq!(tokens(sql).iter().map(|(_, s)| *s).collect::<String>(), sql);
        }
    }
}
