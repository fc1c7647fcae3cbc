//! A deterministic byte mutator for the short fuzz run of the tests (the
//! long runs use libFuzzer's own): the classic moves of AFL and libFuzzer
//! (bit flips, interesting integers, insertions, deletions, copies within
//! the input and from another seed), a few stacked per input.

/// A small fast generator (xorshift64*); the same seed gives the same run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that break length and count fields.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000,
    0x1_0000_0000,
    u64::MAX / 2,
    u64::MAX,
];

/// Text fragments that break parsers of SQL, DDL and JSON.
const TOKENS: [&[u8]; 14] = [
    b"(",
    b")",
    b"'",
    b"\"",
    b";",
    b",",
    b"--",
    b"/*",
    b"SELECT ",
    b" FROM ",
    b"\\u0000",
    b"[",
    b"{",
    "\u{e9}".as_bytes(),
];

/// `input` with 1–4 mutations stacked; `other` is another seed to splice from.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(&mut v, other, rng);
    }
    v
}

fn mutate_once(v: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    if v.is_empty() {
        v.push(rng.next() as u8);
        return;
    }
    let at = rng.below(v.len());
    match rng.below(9) {
        0 => v[at] ^= 1 << rng.below(8),
        1 => v[at] = rng.next() as u8,
        2 => {
            // An interesting integer over 1, 2, 4 or 8 bytes, little-endian.
            let width = 1 << rng.below(4);
            let bytes = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            for (i, b) in bytes.iter().take(width).enumerate() {
                if let Some(slot) = v.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 => {
            let n = 1 + rng.below(v.len() - at).min(64);
            v.drain(at..at + n);
        }
        4 => v.truncate(at),
        5 => {
            // Copy a chunk of the input elsewhere in it.
            let from = rng.below(v.len());
            let n = 1 + rng.below(v.len() - from).min(64);
            let chunk = v[from..from + n].to_vec();
            v.splice(at..at, chunk);
        }
        6 => {
            let token = TOKENS[rng.below(TOKENS.len())];
            v.splice(at..at, token.iter().copied());
        }
        7 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below(other.len() - from).min(256);
            v.splice(at.., other[from..from + n].iter().copied());
        }
        _ => {
            // A run of one byte (long names, deep nesting).
            let n = 1 + rng.below(512);
            let b = v[at];
            v.splice(at..at, std::iter::repeat_n(b, n));
        }
    }
}
