//! The sequence search of the fuzz targets (issue 31): which run of
//! recent programs is tried, in which order, and what is saved.

use pytie::harness::{Replay, shortest_failing_sequence};
use pytie_core::program::binary::{self, sequence};

fn progs(n: u8) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![0, 0, 0, 0, i]).collect()
}

#[test]
fn a_program_that_fails_alone_is_not_searched_further() {
    let mut tried = 0;
    let r = shortest_failing_sequence(&progs(3), b"last", |_| {
        tried += 1;
        true
    });
    assert_eq!(r, Replay::Alone);
    assert_eq!(tried, 1);
}

#[test]
fn the_shortest_run_of_recent_programs_that_makes_it_fail_is_kept() {
    let recent = progs(5);
    // It fails once program 2 (and what follows it) ran before it.
    let r = shortest_failing_sequence(&recent, b"last", |input| {
        sequence(input).is_some_and(|ps| ps.contains(&recent[2].as_slice()))
    });
    let Replay::After(k, seq) = r else {
        panic!("{r:?}")
    };
    assert_eq!(k, 3);
    let parts = sequence(&seq).unwrap();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], recent[2].as_slice());
    assert_eq!(parts[3], b"last");
    assert!(seq.starts_with(binary::SEQUENCE_MAGIC));
}

#[test]
fn nothing_found_is_said() {
    let mut tried = 0;
    let r = shortest_failing_sequence(&progs(4), b"last", |_| {
        tried += 1;
        false
    });
    assert_eq!(r, Replay::NotFound);
    assert_eq!(tried, 5, "alone, then after 1, 2, 3 and 4 programs");
}
