//! Binary form of programs: header rules, totality, round trip.

use pytie_core::program::strategy as program_strategy;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use pytie_core::program::binary::{
    Config, FORMAT_VERSION, HEADER_LEN, MAX_STEPS, WEIGHTS, decode, decode_counted, encode, header,
};
use pytie_core::program::text::parse;
use pytie_core::program::{Holder, ObjKind, Op, Program, StepKind, StepSet, Var};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .filter(|t| *t != "|")
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

fn text(src: &str) -> Program {
    parse(src).unwrap()
}

fn set(kinds: &[StepKind]) -> StepSet {
    kinds.iter().fold(StepSet::EMPTY, |s, k| s.with(*k))
}

#[test]
fn version_and_sizes() {
    assert_eq!(FORMAT_VERSION, 10);
    assert_eq!(WEIGHTS.iter().map(|w| u32::from(*w)).sum::<u32>(), 55);
    assert!(WEIGHTS.iter().all(|w| *w > 0), "every kind stays reachable");
    assert_eq!(HEADER_LEN, 4);
    assert_eq!(MAX_STEPS, 256);
}

// ---- header ----

#[test]
fn short_header_reads_zeros() {
    let zero = Config {
        kinds: StepSet::ALL,
        vars: 1,
        holders: 1,
        weaks: 1,
    };
    for data in [&[][..], &[0], &[0, 0], &[0, 0, 0], &[0, 0, 0, 0]] {
        assert_eq!(header(data), zero, "{data:?}");
        assert_eq!(decode(data), Program::default());
    }
    // Present bytes count even when the header is short.
    assert_eq!(header(&[0x80]).kinds, set(&[StepKind::New, StepKind::Drop]));
    assert_eq!(
        header(&[0, 0, 0x01]).kinds,
        set(&[StepKind::New, StepKind::Collect])
    );
}

#[test]
fn all_zero_header_enables_everything() {
    let cfg = header(&[0, 0, 0, 0]);
    assert_eq!(cfg.kinds, StepSet::ALL);
    // Opcodes then range over all 26 kinds by weight (total 55): 5 is in
    // ret's 4..=7; operands 7 % 1 = 0 and 9 % 1 = 0. 0x37 = 55 wraps to 0,
    // new; kind 9 % 16 = 9 is list.
    assert_eq!(decode(&hex("00 00 00 00 | 05 07 09")), text("ret v0 h0"));
    assert_eq!(decode(&hex("00 00 00 00 | 37 07 09")), text("new v0 list"));
    // The last opcode of each kind's range, and the one after it; `oom`'s
    // operand is K - 1 modulo 255 (0xff is K = 1 again).
    assert_eq!(
        decode(&hex(
            "00 00 00 00 | 2b | 2c | 2e 00 00 | 2f 00 | 30 | 32 00 00 | 33 00 00 | 34 06 | 34 fe | 34 ff \
             | 35 00 | 36 00"
        )),
        text(
            "collect\nshutdown\npickle v0 v0\npyweak v0\nfinalize\ncall v0 h0\ncall_move v0 h0\n\
             oom 7\noom 255\noom 1\ncall_raise h0\ncall_move_raise h0"
        )
    );
}

#[test]
fn new_is_always_enabled_and_new_only_means_all() {
    // Bit 0 alone: every kind.
    assert_eq!(header(&[0x01, 0, 0, 0]).kinds, StepSet::ALL);
    // `new` is on whatever its bit says.
    assert_eq!(
        header(&[0x02, 0, 0, 0]).kinds,
        set(&[StepKind::New, StepKind::Ret])
    );
    assert_eq!(
        header(&[0x03, 0, 0, 0]).kinds,
        set(&[StepKind::New, StepKind::Ret])
    );
    // Bits 17..23 are shutdown, pickle, pyweak, finalize, call,
    // call_move and oom.
    assert_eq!(
        header(&[0, 0, 0x82, 0]).kinds,
        set(&[StepKind::New, StepKind::Shutdown, StepKind::Oom])
    );
    assert_eq!(
        header(&[0, 0, 0xfc, 0]).kinds,
        set(&[
            StepKind::New,
            StepKind::Pickle,
            StepKind::PyWeak,
            StepKind::Finalize,
            StepKind::Call,
            StepKind::CallMove,
            StepKind::Oom
        ])
    );
    assert_eq!(
        header(&[0, 0, 0x80, 0]).kinds,
        set(&[StepKind::New, StepKind::Oom])
    );
    // Bits 24 and 25 (call_raise, call_move_raise) are bits 6 and 7 of the
    // slot byte (layout 9).
    assert_eq!(
        header(&[0, 0, 0, 0x40]).kinds,
        set(&[StepKind::New, StepKind::CallRaise])
    );
    assert_eq!(
        header(&[0, 0, 0, 0x80]).kinds,
        set(&[StepKind::New, StepKind::CallMoveRaise])
    );
    assert_eq!(
        header(&[0xff, 0xff, 0xff, 0]).kinds,
        StepSet::ALL
            .without(StepKind::CallRaise)
            .without(StepKind::CallMoveRaise)
    );
    assert_eq!(header(&[0xff, 0xff, 0xff, 0xc0]).kinds, StepSet::ALL);
}

#[test]
fn swarm_mask_restricts_opcodes() {
    // Enabled: new, drop (bit 7), weight 4 each: opcodes 0..=3 new,
    // 4..=7 drop, then around again from 8.
    let p = decode(&hex(
        "80 00 00 07 | 00 03 03 | 04 05 | 03 06 00 | 07 04 | 08 01 01",
    ));
    assert_eq!(p, text("new v3 untied\ndrop v5\nnew v6\ndrop v4\nnew v1"));
}

#[test]
fn slot_counts() {
    let c = header(&[0, 0, 0, 0xff]);
    assert_eq!((c.vars, c.holders, c.weaks), (8, 4, 2));
    let c = header(&[0, 0, 0, 0xc0]);
    assert_eq!((c.vars, c.holders, c.weaks), (1, 1, 1));
    // Bits 0-2 index [1, 2, 2, 3, 3, 4, 5, 8], bits 3-4 [1, 2, 2, 4],
    // bit 5 [1, 2].
    let c = header(&[0, 0, 0, 0b0010_1011]);
    assert_eq!((c.vars, c.holders, c.weaks), (3, 2, 2));
    let counts: Vec<u8> = (0..8).map(|b| header(&[0, 0, 0, b]).vars).collect();
    assert_eq!(counts, [1, 2, 2, 3, 3, 4, 5, 8]);
    let counts: Vec<u8> = (0..4).map(|b| header(&[0, 0, 0, b << 3]).holders).collect();
    assert_eq!(counts, [1, 2, 2, 4]);
    // Operands are taken modulo the counts: vars 3, holders 2, weaks 2.
    // Enabled: new (0..=3), hold (bit 8; 4..=7), weak (bit 12; 8..=9).
    let p = decode(&hex("01 11 00 2b | 05 07 fe | 08 05 0b"));
    assert_eq!(p, text("hold h1 v2\nweak w1 v2"));
}

#[test]
fn new_kind_indexes_plain_plain_dict_untied() {
    let p = decode(&hex(
        "00 00 00 07 | 00 00 00 | 00 01 01 | 00 02 02 | 00 03 03",
    ));
    assert_eq!(p, text("new v0\nnew v1\nnew v2 dict\nnew v3 untied"));
}

#[test]
fn new_kind_table_has_eight_entries_the_last_legacy() {
    // Version 3's entries keep their places: 4..=7 are plain, plain, dict,
    // legacy.
    let p = decode(&hex(
        "00 00 00 07 | 00 00 04 | 00 01 05 | 00 02 06 | 00 03 07",
    ));
    assert_eq!(p, text("new v0\nnew v1\nnew v2 dict\nnew v3 legacy"));
    assert_eq!(
        encode(&text("new v0 legacy")),
        hex("01 00 00 00 | 00 00 07")
    );
}

#[test]
fn new_kind_table_has_sixteen_entries_the_kinds_of_issue_23_after_version_3s() {
    // Version 4: 8..=15 are cpp, list, map, del, weakref, sub, derived,
    // cpp; version 10: 15 is fragile; 16 wraps to plain.
    let p = decode(&hex(
        "00 00 00 07 | 00 00 08 | 00 01 09 | 00 02 0a | 00 03 0b | 00 04 0c | 00 05 0d | \
         00 06 0e | 00 07 0f | 00 00 10",
    ));
    assert_eq!(
        p,
        text(
            "new v0 cpp\nnew v1 list\nnew v2 map\nnew v3 del\nnew v4 weakref\nnew v5 sub\n\
             new v6 derived\nnew v7 fragile\nnew v0"
        )
    );
    for (k, i) in [
        ("cpp", 8),
        ("list", 9),
        ("map", 10),
        ("del", 11),
        ("weakref", 12),
        ("sub", 13),
        ("derived", 14),
        ("fragile", 15),
    ] {
        let mut want = hex("01 00 00 00 | 00 00");
        want.push(i);
        assert_eq!(encode(&text(&format!("new v0 {k}"))), want, "{k}");
    }
}

// ---- steps ----

#[test]
fn truncated_last_step_is_dropped() {
    // all kinds; 0x0d = 13 is set (two var operands); 0 = new.
    let full = hex("00 00 00 07 | 00 01 00 | 0d 01 02");
    assert_eq!(decode(&full), text("new v1\nset v1 v2"));
    assert_eq!(decode(&full[..full.len() - 1]), text("new v1"));
    assert_eq!(decode(&full[..full.len() - 2]), text("new v1"));
    assert_eq!(decode(&full[..full.len() - 3]), text("new v1"));
    // A step without operands is never truncated.
    assert_eq!(decode(&hex("00 00 00 00 | 2a")), text("collect"));
}

#[test]
fn decoding_stops_at_max_steps() {
    let mut data = hex("00 00 01 00"); // new (0..=3), collect (4..=5)
    data.extend(std::iter::repeat_n(4u8, MAX_STEPS + 50));
    let p = decode(&data);
    assert_eq!(p.ops.len(), MAX_STEPS);
    assert!(p.ops.iter().all(|op| *op == Op::Collect));
    // Bytes after the MAX_STEPS-th step are ignored, whatever they are.
    let mut more = data[..HEADER_LEN + MAX_STEPS].to_vec();
    more.extend([0, 0xff, 0xff, 7]);
    assert_eq!(decode(&more), p);
    // decode_counted says how much was used: header and the steps.
    let (q, used) = decode_counted(&data, StepSet::ALL);
    assert_eq!((q, used), (p, HEADER_LEN + MAX_STEPS));
}

#[test]
fn decode_counted_leaves_out_an_incomplete_last_step() {
    // new v0 plain (3 bytes), then `new` missing its kind byte.
    let data = hex("00 00 01 00 00 00 00 00 00");
    let (p, used) = decode_counted(&data, StepSet::ALL);
    assert_eq!(p.ops.len(), 1);
    assert_eq!(used, HEADER_LEN + 3);
    // A header alone: nothing used past it; a short header: all of it.
    assert_eq!(decode_counted(&data[..4], StepSet::ALL).1, 4);
    assert_eq!(decode_counted(&data[..2], StepSet::ALL).1, 2);
}

#[test]
fn encode_writes_only_the_first_max_steps() {
    let p = Program::new(vec![Op::Collect; MAX_STEPS + 10]);
    let bytes = encode(&p);
    assert_eq!(bytes.len(), HEADER_LEN + MAX_STEPS);
    assert_eq!(decode(&bytes).ops, p.ops[..MAX_STEPS]);
}

// ---- encoder ----

/// The worked example of docs/format.md.
#[test]
fn worked_example() {
    let p = text("new v0\nnew v1 dict\nset v0 v1\nhold h0 v1\ndrop v1\nrelease h0\ncollect\n");
    let bytes = hex("91 05 01 01 | 00 00 00 | 00 01 02 | 04 00 01 | 0b 00 01 | 07 01 | 0f 00 | 12");
    assert_eq!(encode(&p), bytes);
    assert_eq!(decode(&bytes), p);
    // Decoding is modular: opcode 0x26 is collect (38 % 20 = 18), operand
    // 0x07 is v1 (7 % 2).
    assert_eq!(
        decode(&hex("91 05 01 01 | 26 | 07 07")),
        text("collect\ndrop v1")
    );
}

#[test]
fn encode_minimal_header() {
    assert_eq!(encode(&Program::default()), hex("01 00 00 00"));
    // new only: mask bit 0 (the decoder reads all kinds), opcode 0 is new.
    // 3 vars is VAR_COUNTS[3]; untied is NEW_KINDS[3].
    assert_eq!(
        encode(&text("new v2 untied")),
        hex("01 00 00 03 | 00 02 03")
    );
    assert_eq!(
        decode(&hex("01 00 00 03 | 00 02 03")),
        text("new v2 untied")
    );
    // Highest indices used set the counts (8 vars, 4 holders, 2 weaks:
    // 7 | 3 << 3 | 1 << 5); shutdown is bit 17. Opcodes: new 0,
    // release_foreign 4, lock 6, shutdown 9.
    assert_eq!(
        encode(&text("lock v7 w1\nrelease_foreign h3\nshutdown")),
        hex("01 48 02 3f | 06 07 01 | 04 03 | 09")
    );
    // 4 vars needed: the smallest count that holds them is 4 (index 5).
    assert_eq!(encode(&text("drop v3"))[3], 0x05);
}

#[test]
fn encode_skips_assertions() {
    let with = text("new v0\nmark m7 v6\nclone v1 v0\nexpect v7 is not m3\nexpect strong v1 2");
    let without = text("new v0\nclone v1 v0");
    assert_eq!(encode(&with), encode(&without));
    assert_eq!(decode(&encode(&with)), without);
    // Vars used only by assertions do not count towards the header.
    assert_eq!(encode(&with)[3], 0x01);
}

// ---- Arbitrary ----

#[test]
fn arbitrary_program_is_decode_of_all_bytes() {
    let data = hex("80 00 00 07 | 00 03 02 | 01 05 | 02");
    let mut u = Unstructured::new(&data);
    assert_eq!(Program::arbitrary(&mut u).unwrap(), decode(&data));
    assert!(u.is_empty());
    let u = Unstructured::new(&data);
    assert_eq!(Program::arbitrary_take_rest(u).unwrap(), decode(&data));
    let mut u = Unstructured::new(&[]);
    assert_eq!(Program::arbitrary(&mut u).unwrap(), Program::default());
}

#[test]
fn arbitrary_op() {
    let op = |b: &[u8]| Op::arbitrary(&mut Unstructured::new(b)).unwrap();
    assert_eq!(
        op(&[]),
        Op::New {
            v: Var(0),
            kind: ObjKind::Plain
        }
    );
    assert_eq!(
        op(&[8, 3, 9]),
        Op::Echo {
            v: Var(3),
            u: Var(1)
        }
    );
    assert_eq!(
        op(&[26, 6]),
        Op::Hold {
            h: Holder(2),
            v: Var(0)
        }
    );
    assert_eq!(op(&[42, 0xff]), Op::Collect);
    // Ops consume only their own bytes.
    let mut u = Unstructured::new(&[42, 19, 1, 2]);
    assert_eq!(Op::arbitrary(&mut u).unwrap(), Op::Collect);
    assert_eq!(Op::arbitrary(&mut u).unwrap(), Op::Drop { v: Var(1) });
    assert_eq!(u.len(), 1);
}

// ---- properties ----

proptest! {
    #[test]
    fn encode_then_decode_is_identity(p in program_strategy::program(0..=MAX_STEPS)) {
        prop_assert_eq!(decode(&encode(&p)), p);
    }

    #[test]
    fn encode_then_decode_drops_only_assertions(
        p in program_strategy::program_with_assertions(0..=64)
    ) {
        let kept: Vec<Op> = p.ops.iter().copied().filter(|op| !op.is_assertion()).collect();
        prop_assert_eq!(decode(&encode(&p)).ops, kept);
    }

    #[test]
    fn decode_is_total_and_stable(data in prop::collection::vec(any::<u8>(), 0..1200)) {
        let p = decode(&data);
        prop_assert!(p.ops.len() <= MAX_STEPS);
        prop_assert!(p.ops.iter().all(|op| !op.is_assertion()));
        prop_assert_eq!(decode(&encode(&p)), p);
    }

    #[test]
    fn decode_respects_header(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let cfg = header(&data);
        let p = decode(&data);
        prop_assert!(cfg.kinds.contains(StepKind::New));
        prop_assert!(p.kinds().0 & !cfg.kinds.0 == 0);
        for op in &p.ops {
            let bytes = encode(&Program::new(vec![*op]));
            let c = header(&bytes);
            prop_assert!(c.vars <= cfg.vars && c.holders <= cfg.holders && c.weaks <= cfg.weaks);
        }
    }

    #[test]
    fn arbitrary_op_round_trips(data in prop::collection::vec(any::<u8>(), 0..4)) {
        let op = Op::arbitrary(&mut Unstructured::new(&data)).unwrap();
        let p = Program::new(vec![op]);
        prop_assert_eq!(decode(&encode(&p)), p);
    }
}

#[test]
fn decoding_for_a_backend_keeps_to_its_kinds() {
    let allowed = set(&[StepKind::New, StepKind::Drop, StepKind::Hold]);
    // All-zero header: every allowed kind (new 0..=3, drop 4..=7, hold 8..=11).
    assert_eq!(
        pytie_core::program::binary::decode_for(&hex("00 00 00 00 | 05 00 | 09 00 00"), allowed),
        text("drop v0\nhold h0 v0")
    );
    // A mask bit outside `allowed` (shutdown) is ignored.
    assert_eq!(
        pytie_core::program::binary::header_for(&hex("80 00 02 00"), allowed).kinds,
        set(&[StepKind::New, StepKind::Drop])
    );
}

proptest! {
    #[test]
    fn decoding_for_a_backend_never_leaves_its_kinds(
        data in prop::collection::vec(any::<u8>(), 0..200),
        mask in 0u32..(1 << 18),
    ) {
        let allowed = StepSet(mask);
        let p = pytie_core::program::binary::decode_for(&data, allowed);
        prop_assert!(p.kinds().0 & !(allowed.0 | 1) == 0);
    }
}

// ---- sequences ----

#[test]
fn sequences_round_trip_and_decode_totally() {
    use pytie_core::program::binary::{SEQUENCE_MAGIC, encode_sequence, sequence};
    let a = encode(&text("new v0\nshutdown"));
    let b = encode(&text("new v1\ndrop v1"));
    let s = encode_sequence(&[&a, &b]);
    assert_eq!(sequence(&s), Some(vec![a.as_slice(), b.as_slice()]));
    // Not a sequence: one program.
    assert_eq!(sequence(&a), None);
    // Every byte string after the magic decodes: a short length takes what
    // is left, an odd last byte is ignored.
    let mut cut = SEQUENCE_MAGIC.to_vec();
    cut.extend_from_slice(&[9, 0, 1, 2, 3]);
    assert_eq!(sequence(&cut), Some(vec![&[1u8, 2, 3][..]]));
    cut.truncate(SEQUENCE_MAGIC.len() + 1);
    assert_eq!(sequence(&cut), Some(vec![]));
}
