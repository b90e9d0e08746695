//! Text form of programs: parser errors, printer, round trip.

use pytie_core::program::strategy as program_strategy;

use proptest::prelude::*;
use pytie_core::program::text::{ParseError, parse, parse_bytes, print};
use pytie_core::program::{AllocNo, Expect, Holder, Mark, ObjKind, Op, Program, Var, WeakSlot};

/// Parse `src`, expecting an error; return it as `line:col: msg`.
fn err(src: &str) -> String {
    match parse(src) {
        Ok(p) => panic!("{src:?} parsed as {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn one(src: &str) -> Op {
    let p = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    assert_eq!(p.ops.len(), 1, "{src:?}");
    p.ops[0]
}

const ALL_STEPS: &str = "new, ret, echo, get, set, unset, clone, drop, hold, move, release, \
release_foreign, weak, unweak, lock, cycle, collect, shutdown, pickle, pyweak, finalize, call, \
call_move, oom, call_raise, call_move_raise, mark, expect";

// ---- every step, canonical text both ways ----

#[test]
fn every_step_parses_and_prints_canonically() {
    let (v, u) = (Var(1), Var(7));
    let (h, w, m) = (Holder(3), WeakSlot(1), Mark(5));
    let table: Vec<(&str, Op)> = vec![
        (
            "new v1",
            Op::New {
                v,
                kind: ObjKind::Plain,
            },
        ),
        (
            "new v1 dict",
            Op::New {
                v,
                kind: ObjKind::Dict,
            },
        ),
        (
            "new v1 untied",
            Op::New {
                v,
                kind: ObjKind::Untied,
            },
        ),
        ("ret v1 h3", Op::Ret { v, h }),
        ("echo v1 v7", Op::Echo { v, u }),
        ("get v1 v7", Op::Get { v, u }),
        ("set v7 v1", Op::Set { u, v }),
        ("unset v7", Op::Unset { u }),
        ("clone v1 v7", Op::Clone { v, u }),
        ("drop v1", Op::Drop { v }),
        ("hold h3 v1", Op::Hold { h, v }),
        ("move h3 v1", Op::Move { h, v }),
        ("release h3", Op::Release { h }),
        ("release_foreign h3", Op::ReleaseForeign { h }),
        ("weak w1 v1", Op::Weak { w, v }),
        ("unweak w1", Op::Unweak { w }),
        ("lock v1 w1", Op::Lock { v, w }),
        ("cycle v1", Op::Cycle { v }),
        ("collect", Op::Collect),
        ("shutdown", Op::Shutdown),
        ("mark m5 v1", Op::Mark { m, v }),
        (
            "expect v1 is v7",
            Op::Expect(Expect::IsVar {
                v,
                u,
                negated: false,
            }),
        ),
        (
            "expect v1 is not v7",
            Op::Expect(Expect::IsVar {
                v,
                u,
                negated: true,
            }),
        ),
        (
            "expect v1 is m5",
            Op::Expect(Expect::IsMark {
                v,
                m,
                negated: false,
            }),
        ),
        (
            "expect v1 is not m5",
            Op::Expect(Expect::IsMark {
                v,
                m,
                negated: true,
            }),
        ),
        ("expect v1 none", Op::Expect(Expect::None { v })),
        ("expect v1 moved", Op::Expect(Expect::Moved { v })),
        ("expect strong v1 0", Op::Expect(Expect::Strong { v, n: 0 })),
        (
            "expect weak v1 4294967295",
            Op::Expect(Expect::Weak { v, n: u32::MAX }),
        ),
    ];
    for (text, op) in &table {
        assert_eq!(one(text), *op, "{text}");
        assert_eq!(op.to_string(), *text);
    }
    let p = Program::new(table.iter().map(|(_, op)| *op).collect());
    let expected: String = table.iter().map(|(t, _)| format!("{t}\n")).collect();
    assert_eq!(print(&p), expected);
    assert_eq!(p.to_string(), expected);
    assert_eq!(parse(&expected), Ok(p));
}

#[test]
fn plain_is_accepted_and_printed_as_default() {
    let op = one("new v0 plain");
    assert_eq!(
        op,
        Op::New {
            v: Var(0),
            kind: ObjKind::Plain
        }
    );
    assert_eq!(op.to_string(), "new v0");
}

#[test]
fn comments_blank_lines_tabs_and_crlf() {
    let src = "# a scenario\n\n  new v0   # make one\n\t\tclone\tv1 v0\r\n   \n#\nexpect v1 is v0#trailing\r\n";
    let p = parse(src).unwrap();
    assert_eq!(
        p.ops,
        vec![
            Op::New {
                v: Var(0),
                kind: ObjKind::Plain
            },
            Op::Clone {
                v: Var(1),
                u: Var(0)
            },
            Op::Expect(Expect::IsVar {
                v: Var(1),
                u: Var(0),
                negated: false
            }),
        ]
    );
}

#[test]
fn oom_takes_an_allocation_number_from_1_to_255() {
    assert_eq!(
        one("oom 1"),
        Op::Oom {
            k: AllocNo::of(1).unwrap()
        }
    );
    assert_eq!(one("oom 255").to_string(), "oom 255");
    for (bad, col) in [
        ("oom 0", 5),
        ("oom 256", 5),
        ("oom", 4),
        ("oom v0", 5),
        ("oom -1", 5),
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("1:{col}: expected an allocation number (1..=255)")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn counts_accept_leading_zeros() {
    assert_eq!(
        one("expect strong v0 007"),
        Op::Expect(Expect::Strong { v: Var(0), n: 7 })
    );
}

// ---- error messages ----

#[test]
fn error_display_and_fields() {
    let e = parse("new v0\n\nget h1 v0").unwrap_err();
    assert_eq!(
        e,
        ParseError {
            line: 3,
            col: 5,
            msg: r#"expected a var (v0..v7), found "h1""#.to_string()
        }
    );
    assert_eq!(e.to_string(), r#"3:5: expected a var (v0..v7), found "h1""#);
    let _: &dyn std::error::Error = &e;
}

#[test]
fn unknown_step() {
    assert_eq!(
        err("foo v1"),
        format!(r#"1:1: unknown step "foo"; expected one of: {ALL_STEPS}"#)
    );
    assert_eq!(
        err("new v0\n   NEW v0"),
        format!(r#"2:4: unknown step "NEW"; expected one of: {ALL_STEPS}"#)
    );
}

#[test]
fn wrong_slot_sort() {
    assert_eq!(
        err("get h1 v0"),
        r#"1:5: expected a var (v0..v7), found "h1""#
    );
    assert_eq!(err("new v8"), r#"1:5: expected a var (v0..v7), found "v8""#);
    assert_eq!(
        err("new v01"),
        r#"1:5: expected a var (v0..v7), found "v01""#
    );
    assert_eq!(
        err("hold v0 v0"),
        r#"1:6: expected a holder (h0..h3), found "v0""#
    );
    assert_eq!(
        err("release h4"),
        r#"1:9: expected a holder (h0..h3), found "h4""#
    );
    assert_eq!(
        err("weak w2 v0"),
        r#"1:6: expected a weak slot (w0, w1), found "w2""#
    );
    assert_eq!(
        err("lock v0 h0"),
        r#"1:9: expected a weak slot (w0, w1), found "h0""#
    );
    assert_eq!(
        err("mark m8 v0"),
        r#"1:6: expected a mark (m0..m7), found "m8""#
    );
}

#[test]
fn trailing_token() {
    assert_eq!(
        err("new v0\ndrop v1 v3"),
        r#"2:9: expected end of line, found "v3""#
    );
    assert_eq!(
        err("collect now"),
        r#"1:9: expected end of line, found "now""#
    );
    assert_eq!(
        err("new v0 dict plain"),
        r#"1:13: expected end of line, found "plain""#
    );
    assert_eq!(
        err("expect v0 none v1"),
        r#"1:16: expected end of line, found "v1""#
    );
}

#[test]
fn missing_token_reports_end_of_line() {
    // Column just after the last token, comments and trailing blanks aside.
    assert_eq!(
        err("new v0\n\n\nhold h0"),
        "4:8: expected a var (v0..v7), found end of line"
    );
    assert_eq!(
        err("hold h0   # who?"),
        "1:8: expected a var (v0..v7), found end of line"
    );
    assert_eq!(
        err("new"),
        "1:4: expected a var (v0..v7), found end of line"
    );
    assert_eq!(
        err("release"),
        "1:8: expected a holder (h0..h3), found end of line"
    );
    assert_eq!(
        err("unweak"),
        "1:7: expected a weak slot (w0, w1), found end of line"
    );
    assert_eq!(
        err("mark"),
        "1:5: expected a mark (m0..m7), found end of line"
    );
    assert_eq!(
        err("expect strong v0"),
        "1:17: expected a count (0..4294967295), found end of line"
    );
}

#[test]
fn bad_object_kind() {
    assert_eq!(
        err("new   v0    big"),
        r#"1:13: expected plain, dict, untied, legacy, cpp, list, map, del, weakref, sub or derived, found "big""#
    );
    assert_eq!(
        err("new v0 Dict"),
        r#"1:8: expected plain, dict, untied, legacy, cpp, list, map, del, weakref, sub or derived, found "Dict""#
    );
}

#[test]
fn expect_errors() {
    assert_eq!(
        err("expect"),
        "1:7: expected a var (v0..v7), strong, weak, wrappers or finalized, found end of line"
    );
    assert_eq!(
        err("expect h0 none"),
        r#"1:8: expected a var (v0..v7), strong, weak, wrappers or finalized, found "h0""#
    );
    assert_eq!(
        err("expect v0"),
        "1:10: expected is, none, moved or obj, found end of line"
    );
    assert_eq!(
        err("expect v0 isnt v1"),
        r#"1:11: expected is, none, moved or obj, found "isnt""#
    );
    assert_eq!(
        err("expect v0 obj v1"),
        r#"1:15: expected a mark (m0..m7), found "v1""#
    );
    assert_eq!(
        err("expect v0 obj not"),
        "1:18: expected a mark (m0..m7), found end of line"
    );
    assert_eq!(
        err("expect wrappers v0"),
        r#"1:17: expected a count (0..4294967295), found "v0""#
    );
    assert_eq!(
        err("expect v0 is"),
        "1:13: expected a var (v0..v7), a mark (m0..m7) or not, found end of line"
    );
    assert_eq!(
        err("expect v0 is h1"),
        r#"1:14: expected a var (v0..v7), a mark (m0..m7) or not, found "h1""#
    );
    assert_eq!(
        err("expect v0 is not not"),
        r#"1:18: expected a var (v0..v7) or a mark (m0..m7), found "not""#
    );
    assert_eq!(
        err("expect weak v0 -1"),
        r#"1:16: expected a count (0..4294967295), found "-1""#
    );
    assert_eq!(
        err("expect weak v0 +1"),
        r#"1:16: expected a count (0..4294967295), found "+1""#
    );
}

#[test]
fn huge_count() {
    assert_eq!(
        err("expect strong v0 4294967296"),
        r#"1:18: expected a count (0..4294967295), found "4294967296""#
    );
    let big = "9".repeat(10_000);
    let e = parse(&format!("expect strong v0 {big}")).unwrap_err();
    assert_eq!((e.line, e.col), (1, 18));
    assert!(
        e.msg
            .starts_with(r#"expected a count (0..4294967295), found "9999"#),
        "{e}"
    );
    assert!(e.msg.len() < 200, "long tokens are shortened: {e}");
}

#[test]
fn empty_program() {
    let msg = "empty program: expected at least one step";
    assert_eq!(err(""), format!("1:1: {msg}"));
    assert_eq!(err("# nothing"), format!("2:1: {msg}"));
    assert_eq!(err("# nothing\n"), format!("2:1: {msg}"));
    assert_eq!(err("\n\n  # a\n\t\n"), format!("5:1: {msg}"));
}

#[test]
fn non_ascii_and_long_lines() {
    // Columns count characters.
    assert_eq!(
        err("new v0 é"),
        r#"1:8: expected plain, dict, untied, legacy, cpp, list, map, del, weakref, sub or derived, found "é""#
    );
    assert_eq!(
        err("ñew v0"),
        format!(r#"1:1: unknown step "ñew"; expected one of: {ALL_STEPS}"#)
    );
    assert_eq!(
        err("new\u{a0}v0"),
        format!(r#"1:1: unknown step "new\u{{a0}}v0"; expected one of: {ALL_STEPS}"#)
    );
    let long = format!("new v0 {}", "x".repeat(1_000_000));
    let e = parse(&long).unwrap_err();
    assert_eq!((e.line, e.col), (1, 8));
    assert!(e.msg.len() < 200);
    let spaces = format!("{}collect", " ".repeat(100_000));
    assert_eq!(parse(&spaces).unwrap().ops, vec![Op::Collect]);
    assert!(parse("new v0 \u{0}").is_err());
}

// ---- properties ----

proptest! {
    #[test]
    fn print_then_parse_is_identity(p in program_strategy::program_with_assertions(1..=64)) {
        let text = print(&p);
        prop_assert_eq!(parse(&text), Ok(p));
    }

    #[test]
    fn parse_never_panics(s in ".{0,200}") {
        let _ = parse(&s);
    }

    #[test]
    fn parse_never_panics_on_token_soup(
        toks in prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "new", "ret", "expect", "is", "not", "none", "moved", "strong", "weak",
                    "v0", "v7", "v8", "h3", "w1", "m7", "dict", "#", "\n", "\t", "99999999999", "0",
                ]).prop_map(str::to_string),
                "[a-z0-9 ]{0,4}",
            ],
            0..30,
        )
    ) {
        let src = toks.join(" ");
        if let Err(e) = parse(&src) {
            prop_assert!(e.line >= 1 && e.col >= 1);
        }
    }

    /// Whatever parses prints back to something that parses to the same.
    #[test]
    fn parse_print_parse(lines in prop::collection::vec(
        (program_strategy::any_op(), "[ \t]{0,3}", "( #[ -~]{0,8})?"),
        1..10,
    )) {
        let src: String = lines
            .iter()
            .map(|(op, pad, comment)| format!("{pad}{}{comment}\n", op.to_string().replace(' ', &format!(" {pad}"))))
            .collect();
        let p = parse(&src).unwrap();
        prop_assert_eq!(p.ops.len(), lines.len());
        prop_assert_eq!(parse(&print(&p)), Ok(p));
    }
}

#[test]
fn a_byte_order_mark_is_skipped_and_bad_utf8_has_line_and_col() {
    let p = parse_bytes(b"\xEF\xBB\xBFnew v0\ndrop v0\n").expect("BOM skipped");
    assert_eq!(p, parse("new v0\ndrop v0\n").unwrap());
    let e = parse_bytes(b"new v0\ndrop \xC3\xA9 \xFF v0\n").expect_err("not UTF-8");
    assert_eq!(e.to_string(), "2:8: not UTF-8 text: invalid byte 0xff");
}
