//! SQL tokens of a partial query, for the prefix grammar.
//!
//! The text being generated usually ends inside a token (`SELECT na`), so the
//! last token is kept apart as a [`Tail`] that more characters may still
//! extend; everything before it is final.

/// A finished token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An unquoted word: keyword or identifier, as written.
    Word(String),
    /// `"x"`: an identifier, or a string when no column has that name (SQLite).
    DoubleQuoted(String),
    /// `` `x` `` or `[x]`: always an identifier.
    Quoted(String),
    /// `'…'`
    Str,
    Num,
    /// `( ) , . ; * + - / % = == != <> < <= > >= ||`
    Op(&'static str),
}

/// The last token when the text may continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    Word(String),
    /// An unterminated quoted identifier (its text so far); `true` for `"`.
    Quoted(String, bool),
    /// An unterminated `'…`.
    Str,
    /// `!` or `|`, which only `!=` and `||` complete.
    Op(char),
}

/// The tokens of a text; `tail` is `None` when the text ends between tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lexed {
    pub toks: Vec<Tok>,
    pub tail: Option<Tail>,
}

/// Characters no token may hold: the text is not a prefix of any query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChar;

const OPS2: [&str; 7] = ["==", "!=", "<>", "<=", ">=", "||", "--"];
const OPS1: [&str; 13] = ["(", ")", ",", ".", ";", "*", "+", "-", "/", "%", "=", "<", ">"];

fn op1(c: char) -> Option<&'static str> {
    OPS1.iter().copied().find(|o| o.starts_with(c))
}

/// Splits `text`. With `complete`, the text is taken as ended: a trailing word
/// or number is final and an unterminated quote or lone `!`/`|` is an error.
pub fn lex(text: &str, complete: bool) -> Result<Lexed, BadChar> {
    let b = text.as_bytes();
    let mut out = Lexed::default();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
            let w = text[start..i].to_string();
            match i == b.len() && !complete {
                true => out.tail = Some(Tail::Word(w)),
                false => out.toks.push(Tok::Word(w)),
            }
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            i = number_end(b, i);
            // A number that could still grow is as good as a finished one:
            // whatever follows a number may follow it.
            out.toks.push(Tok::Num);
        } else if c == '\'' {
            match closing(b, i + 1, b'\'') {
                Some(end) => {
                    out.toks.push(Tok::Str);
                    i = end;
                }
                None if complete => return Err(BadChar),
                None => {
                    out.tail = Some(Tail::Str);
                    i = b.len();
                }
            }
        } else if c == '"' || c == '`' || c == '[' {
            let close = match c {
                '[' => b']',
                other => other as u8,
            };
            match closing(b, i + 1, close) {
                Some(end) => {
                    let inner = text[i + 1..end - 1].replace(&format!("{}{}", close as char, close as char), "");
                    out.toks.push(match c {
                        '"' => Tok::DoubleQuoted(inner),
                        _ => Tok::Quoted(inner),
                    });
                    i = end;
                }
                None if complete => return Err(BadChar),
                None => {
                    out.tail = Some(Tail::Quoted(text[i + 1..].to_string(), c == '"'));
                    i = b.len();
                }
            }
        } else if let Some(op) = OPS2.iter().find(|o| text[i..].starts_with(**o)) {
            if *op == "--" {
                return Err(BadChar); // a comment: nothing a query needs
            }
            out.toks.push(Tok::Op(op));
            i += 2;
        } else if c == '/' && b.get(i + 1) == Some(&b'*') {
            return Err(BadChar);
        } else if c == '!' || c == '|' {
            if i + 1 < b.len() || complete {
                return Err(BadChar);
            }
            out.tail = Some(Tail::Op(c));
            i += 1;
        } else if let Some(op) = op1(c) {
            // `T1 . name` is SQL, but nobody writes it: a model that does is rambling.
            let spaced = |j: Option<&u8>| j.is_some_and(u8::is_ascii_whitespace);
            if op == "." && (spaced(i.checked_sub(1).and_then(|j| b.get(j))) || spaced(b.get(i + 1))) {
                return Err(BadChar);
            }
            out.toks.push(Tok::Op(op));
            i += 1;
        } else {
            return Err(BadChar);
        }
    }
    Ok(out)
}

/// End of a number starting at `i`: digits, a fraction, an exponent.
fn number_end(b: &[u8], mut i: usize) -> usize {
    let digits = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        digits(&mut i);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        digits(&mut i);
    }
    i
}

/// Index just past the closing quote (a doubled quote is an escaped one).
fn closing(b: &[u8], mut i: usize, q: u8) -> Option<usize> {
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) && q != b']' {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Tok {
        Tok::Word(s.into())
    }

    #[test]
    fn a_partial_word_is_the_tail() {
        let l = lex("SELECT count(*) FROM sin", false).unwrap();
        assert_eq!(
            l.toks,
            vec![
                w("SELECT"),
                w("count"),
                Tok::Op("("),
                Tok::Op("*"),
                Tok::Op(")"),
                w("FROM")
            ]
        );
        assert_eq!(l.tail, Some(Tail::Word("sin".into())));
        let l = lex("SELECT count(*) FROM sin", true).unwrap();
        assert_eq!(l.toks.last(), Some(&w("sin")));
        assert_eq!(l.tail, None);
    }

    #[test]
    fn strings_quotes_and_operators() {
        let l = lex("a <> 'it''s' AND \"x y\" >= 1.5e3 || [b c]", false).unwrap();
        assert_eq!(
            l.toks,
            vec![
                w("a"),
                Tok::Op("<>"),
                Tok::Str,
                w("AND"),
                Tok::DoubleQuoted("x y".into()),
                Tok::Op(">="),
                Tok::Num,
                Tok::Op("||"),
                Tok::Quoted("b c".into()),
            ]
        );
        assert_eq!(lex("name = 'Jo", false).unwrap().tail, Some(Tail::Str));
        assert_eq!(lex("name = 'Jo", true), Err(BadChar));
        assert_eq!(lex("a !", false).unwrap().tail, Some(Tail::Op('!')));
        assert_eq!(lex("a ! b", false), Err(BadChar));
        assert_eq!(lex("a -- comment", false), Err(BadChar));
        assert_eq!(lex("a # b", false), Err(BadChar));
    }
}
