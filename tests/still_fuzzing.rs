//! Random inputs through the fuzz target's entry: they must all pass on
//! the correct runtime (no false alarms), and together they must still
//! reach deep states, so that a change to the decoder or the generator
//! cannot silently leave the fuzzer testing nothing.

use pytie::harness;
use pytie_core::exec::coverage::{Edge, edges_of};
use pytie_core::program::binary;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_inputs_pass_and_reach_every_transition() {
    let mut rng = Rng(0x005E_ED0F_F022);
    let mut reached = [0u32; Edge::COUNT];
    let runs = 3000;
    for i in 0..runs {
        let len = 4 + (rng.next() % 120) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let prog = binary::decode(&data);
        if let Err(f) = harness::check_lifecycle(&prog) {
            panic!("random input {i} ({data:02x?}) fails on the correct runtime:\n{f}");
        }
        for e in edges_of(&prog).iter() {
            reached[e as usize] += 1;
        }
    }
    let missing: Vec<String> = Edge::ALL
        .iter()
        .filter(|e| e.in_design_s() && reached[**e as usize] < 10)
        .map(|e| format!("{e} ({} programs)", reached[*e as usize]))
        .collect();
    assert!(
        missing.is_empty(),
        "random inputs rarely reach: {}",
        missing.join(", ")
    );
}
