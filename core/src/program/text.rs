//! Text form of programs (contract §4.1).
//!
//! One step per line, tokens separated by spaces or tabs (a stray `\r`
//! counts as a space), `#` starts a comment that runs to the end of the
//! line, blank and comment-only lines are ignored. [`parse`] never panics;
//! its errors name the 1-based line and column of the offending token,
//! what was expected and what was found. [`print`] (and `Display` for
//! [`Op`] and [`Program`]) write the canonical form, and
//! `parse(&print(p)) == Ok(p)` for every non-empty program (the empty
//! program prints as the empty string, which `parse` rejects).

use std::fmt;

use super::{
    AllocNo, Expect, HOLDERS, Holder, MARKS, MAX_PROGRAM_STEPS, Mark, ObjKind, Op, Program,
    StepKind, VARS, Var, WEAKS, WeakSlot,
};

/// A parse error at a 1-based `line` and `col` (column in characters,
/// which is the byte column for ASCII input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

/// Every step name the text form accepts, in the order error messages
/// list them: the vocabulary's, then the assertions.
fn step_names() -> String {
    let mut names: Vec<&str> = StepKind::ALL.iter().map(|k| k.name()).collect();
    names.extend(["mark", "expect"]);
    names.join(", ")
}

/// Parse a file's bytes: a leading UTF-8 byte order mark is skipped;
/// bytes that are not UTF-8 are an error at their line and column (the
/// column counting the characters before them on their line).
pub fn parse_bytes(data: &[u8]) -> Result<Program, ParseError> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    match std::str::from_utf8(data) {
        Ok(src) => parse(src),
        Err(e) => {
            let good = &data[..e.valid_up_to()];
            let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let before = std::str::from_utf8(&good[line_start..]).map_or(0, |t| t.chars().count());
            Err(ParseError {
                line: good.iter().filter(|&&b| b == b'\n').count() + 1,
                col: before + 1,
                msg: format!(
                    "not UTF-8 text: invalid byte 0x{:02x}",
                    data[e.valid_up_to()]
                ),
            })
        }
    }
}

/// Parse a whole program. A program with no step, or with more than
/// [`MAX_PROGRAM_STEPS`] steps, is an error.
pub fn parse(src: &str) -> Result<Program, ParseError> {
    let mut ops = Vec::new();
    let mut lines = 0;
    for (i, raw) in src.lines().enumerate() {
        lines = i + 1;
        let mut line = Line::new(raw, i + 1);
        if line.toks.is_empty() {
            continue;
        }
        if ops.len() == MAX_PROGRAM_STEPS {
            return Err(ParseError {
                line: i + 1,
                col: 1,
                msg: format!(
                    "too many steps: a program has at most {MAX_PROGRAM_STEPS} steps \
                     (assertions included); split it"
                ),
            });
        }
        ops.push(line.step()?);
    }
    if ops.is_empty() {
        return Err(ParseError {
            line: lines + 1,
            col: 1,
            msg: "empty program: expected at least one step".to_string(),
        });
    }
    Ok(Program::new(ops))
}

/// The canonical text of a program: one step per line, each line ended
/// by a newline.
pub fn print(p: &Program) -> String {
    p.to_string()
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.ops {
            writeln!(f, "{op}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.write_step(f)? {
            return Ok(());
        }
        match *self {
            Op::Mark { m, v } => write!(f, "mark {m} {v}"),
            Op::Expect(e) => write!(f, "{e}"),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |negated: bool| if negated { "not " } else { "" };
        match *self {
            Expect::IsVar { v, u, negated } => write!(f, "expect {v} is {}{u}", not(negated)),
            Expect::IsMark { v, m, negated } => write!(f, "expect {v} is {}{m}", not(negated)),
            Expect::ObjMark { v, m, negated } => write!(f, "expect {v} obj {}{m}", not(negated)),
            Expect::None { v } => write!(f, "expect {v} none"),
            Expect::Moved { v } => write!(f, "expect {v} moved"),
            Expect::Strong { v, n } => write!(f, "expect strong {v} {n}"),
            Expect::Weak { v, n } => write!(f, "expect weak {v} {n}"),
            Expect::Wrappers { n } => write!(f, "expect wrappers {n}"),
            Expect::Finalized { n } => write!(f, "expect finalized {n}"),
        }
    }
}

/// A token and its 1-based column (in characters).
#[derive(Clone, Copy)]
struct Tok<'s> {
    text: &'s str,
    col: usize,
}

/// One line split into tokens, consumed left to right (the operands'
/// parsers of [`super::vocab::Operand`] read from it).
pub struct Line<'s> {
    line: usize,
    toks: Vec<Tok<'s>>,
    next: usize,
    /// Column just after the last token: where "end of line" is reported.
    end_col: usize,
}

impl<'s> Line<'s> {
    fn new(raw: &'s str, line: usize) -> Line<'s> {
        let content = match raw.find('#') {
            Some(i) => &raw[..i],
            None => raw,
        };
        let mut toks = Vec::new();
        let mut start: Option<(usize, usize)> = None; // (byte, col)
        let mut col = 0;
        let mut end_col = 1;
        for (byte, c) in content.char_indices() {
            col += 1;
            if c == ' ' || c == '\t' || c == '\r' {
                if let Some((b, tc)) = start.take() {
                    toks.push(Tok {
                        text: &content[b..byte],
                        col: tc,
                    });
                }
            } else {
                if start.is_none() {
                    start = Some((byte, col));
                }
                end_col = col + 1;
            }
        }
        if let Some((b, tc)) = start {
            toks.push(Tok {
                text: &content[b..],
                col: tc,
            });
        }
        Line {
            line,
            toks,
            next: 0,
            end_col,
        }
    }

    fn err(&self, col: usize, msg: String) -> ParseError {
        ParseError {
            line: self.line,
            col,
            msg,
        }
    }

    /// Error "expected {what}, found ..." at the next token (or at end of
    /// line when there is none). Does not consume.
    fn expected(&self, what: &str) -> ParseError {
        match self.toks.get(self.next) {
            Some(t) => self.err(t.col, format!("expected {what}, found {}", quote(t.text))),
            None => self.err(self.end_col, format!("expected {what}, found end of line")),
        }
    }

    fn peek(&self) -> Option<&'s str> {
        self.toks.get(self.next).map(|t| t.text)
    }

    fn bump(&mut self) {
        self.next += 1;
    }

    /// Consume the next token if it is one of `names`; return its index.
    fn keyword(&mut self, names: &[&str], what: &str) -> Result<usize, ParseError> {
        match self.peek().and_then(|t| names.iter().position(|n| *n == t)) {
            Some(i) => {
                self.bump();
                Ok(i)
            }
            None => Err(self.expected(what)),
        }
    }

    /// Consume a slot name `{prefix}{i}` with `i < n`, if the next token is one.
    fn try_slot(&mut self, prefix: char, n: usize) -> Option<u8> {
        let i = slot_index(self.peek()?, prefix, n)?;
        self.bump();
        Some(i)
    }

    pub(super) fn var(&mut self) -> Result<Var, ParseError> {
        self.try_slot('v', VARS)
            .map(Var)
            .ok_or_else(|| self.expected(VAR))
    }

    pub(super) fn holder(&mut self) -> Result<Holder, ParseError> {
        self.try_slot('h', HOLDERS)
            .map(Holder)
            .ok_or_else(|| self.expected("a holder (h0..h3)"))
    }

    pub(super) fn weak(&mut self) -> Result<WeakSlot, ParseError> {
        self.try_slot('w', WEAKS)
            .map(WeakSlot)
            .ok_or_else(|| self.expected("a weak slot (w0, w1)"))
    }

    /// `oom`'s allocation number, a decimal K from 1.
    pub(super) fn alloc_no(&mut self) -> Result<AllocNo, ParseError> {
        let n = self
            .peek()
            .and_then(|t| t.parse::<u32>().ok())
            .and_then(AllocNo::of);
        match n {
            Some(n) => {
                self.bump();
                Ok(n)
            }
            None => Err(self.expected(&format!("an allocation number (1..={})", AllocNo::MAX))),
        }
    }

    fn mark(&mut self) -> Result<Mark, ParseError> {
        self.try_slot('m', MARKS)
            .map(Mark)
            .ok_or_else(|| self.expected(MARK))
    }

    /// `new`'s optional object kind (plain when absent).
    pub(super) fn obj_kind(&mut self) -> Result<ObjKind, ParseError> {
        if self.peek().is_none() {
            return Ok(ObjKind::Plain);
        }
        const NAMES: [&str; ObjKind::ALL.len()] = {
            let mut n = [""; ObjKind::ALL.len()];
            let mut i = 0;
            while i < n.len() {
                n[i] = ObjKind::ALL[i].name();
                i += 1;
            }
            n
        };
        let i = self.keyword(
            &NAMES,
            "plain, dict, untied, legacy, cpp, list, map, del, weakref, sub or derived",
        )?;
        Ok(ObjKind::ALL[i])
    }

    fn count(&mut self) -> Result<u32, ParseError> {
        let n = self
            .peek()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok());
        match n {
            Some(n) => {
                self.bump();
                Ok(n)
            }
            None => Err(self.expected("a count (0..4294967295)")),
        }
    }

    fn end(&self) -> Result<(), ParseError> {
        match self.toks.get(self.next) {
            None => Ok(()),
            Some(_) => Err(self.expected("end of line")),
        }
    }

    /// Parse the whole line as one step (the line has at least one token).
    fn step(&mut self) -> Result<Op, ParseError> {
        let name = self.toks[0];
        self.bump();
        let op = match name.text {
            "mark" => Op::Mark {
                m: self.mark()?,
                v: self.var()?,
            },
            "expect" => Op::Expect(self.expect()?),
            other => match StepKind::from_name(other) {
                Some(kind) => Op::parse_operands(kind, self)?,
                None => {
                    return Err(self.err(
                        name.col,
                        format!(
                            "unknown step {}; expected one of: {}",
                            quote(other),
                            step_names()
                        ),
                    ));
                }
            },
        };
        self.end()?;
        Ok(op)
    }

    /// The rest of an `expect` line.
    fn expect(&mut self) -> Result<Expect, ParseError> {
        match self.peek() {
            Some("strong") => {
                self.bump();
                return Ok(Expect::Strong {
                    v: self.var()?,
                    n: self.count()?,
                });
            }
            Some("weak") => {
                self.bump();
                return Ok(Expect::Weak {
                    v: self.var()?,
                    n: self.count()?,
                });
            }
            Some("wrappers") => {
                self.bump();
                return Ok(Expect::Wrappers { n: self.count()? });
            }
            Some("finalized") => {
                self.bump();
                return Ok(Expect::Finalized { n: self.count()? });
            }
            _ => {}
        }
        let v = self
            .try_slot('v', VARS)
            .map(Var)
            .ok_or_else(|| self.expected("a var (v0..v7), strong, weak, wrappers or finalized"))?;
        let obj = match self.keyword(&["is", "none", "moved", "obj"], "is, none, moved or obj")? {
            1 => return Ok(Expect::None { v }),
            2 => return Ok(Expect::Moved { v }),
            3 => true,
            _ => false,
        };
        let negated = self.peek() == Some("not");
        if negated {
            self.bump();
        }
        if obj {
            let m = self
                .try_slot('m', MARKS)
                .ok_or_else(|| self.expected("a mark (m0..m7)"))?;
            return Ok(Expect::ObjMark {
                v,
                m: Mark(m),
                negated,
            });
        }
        if let Some(u) = self.try_slot('v', VARS) {
            return Ok(Expect::IsVar {
                v,
                u: Var(u),
                negated,
            });
        }
        if let Some(m) = self.try_slot('m', MARKS) {
            return Ok(Expect::IsMark {
                v,
                m: Mark(m),
                negated,
            });
        }
        Err(self.expected(if negated {
            "a var (v0..v7) or a mark (m0..m7)"
        } else {
            "a var (v0..v7), a mark (m0..m7) or not"
        }))
    }
}

const VAR: &str = "a var (v0..v7)";
const MARK: &str = "a mark (m0..m7)";

/// `tok` is exactly `{prefix}{i}` (canonical decimal) with `i < n`.
fn slot_index(tok: &str, prefix: char, n: usize) -> Option<u8> {
    let digits = tok.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let i: usize = digits.parse().ok()?;
    (i < n).then_some(i as u8)
}

/// A token quoted for an error message, shortened when very long.
fn quote(tok: &str) -> String {
    const MAX: usize = 40;
    if tok.chars().count() <= MAX {
        format!("{tok:?}")
    } else {
        let short: String = tok.chars().take(MAX).collect();
        format!("{short:?}...")
    }
}
