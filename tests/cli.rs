//! The `pytie` command: exit codes and messages, bad input never panics.

use std::path::PathBuf;
use std::process::{Command, Output};

fn pytie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(args)
        .output()
        .expect("run pytie")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch file with `content` (removed with its directory at drop).
struct Scratch(PathBuf);
impl Scratch {
    fn new(name: &str, content: &[u8]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pytie-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        Scratch(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

#[test]
fn a_passing_program_exits_0() {
    let f = Scratch::new("ok.pytie", b"new v0\nhold h0 v0\ndrop v0\nret v1 h0\n");
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("ok "));
}

#[test]
fn a_failing_program_exits_1_with_a_report() {
    let f = Scratch::new("fail.pytie", b"new v0\nexpect strong v0 2\n");
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("failed expectation at step 2"), "{out}");
    assert!(out.contains("the count is 1"), "{out}");
    assert!(
        out.contains("expect strong v0 2       # <- step 2: fails here"),
        "{out}"
    );
}

#[test]
fn unknown_steps_and_wrong_slots_give_line_and_column() {
    for (src, want) in [
        (
            &b"new v0\nfrobnicate v0\n"[..],
            ":2:1: unknown step \"frobnicate\"",
        ),
        (
            b"new v0\nhold v1 v0\n",
            ":2:6: expected a holder (h0..h3), found \"v1\"",
        ),
        (b"new v9\n", ":1:5: expected a var (v0..v7), found \"v9\""),
        (
            b"new v0 big\n",
            ":1:8: expected plain, dict, untied, legacy, cpp, list, map, del, weakref, sub or derived, found \"big\"",
        ),
        (b"# only a comment\n", ":2:1: empty program"),
    ] {
        let f = Scratch::new("bad.pytie", src);
        let o = pytie(&["run", f.path()]);
        assert_eq!(o.status.code(), Some(2), "{src:?}");
        assert!(stderr(&o).contains(want), "{src:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
}

#[test]
fn unreadable_and_empty_files_exit_2() {
    let o = pytie(&["run", "/nonexistent/program.pytie"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    for name in ["empty.pytie", "empty.bin"] {
        let f = Scratch::new(name, b"");
        let o = pytie(&["run", f.path()]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(stderr(&o).contains("empty file"), "{}", stderr(&o));
    }
    let f = Scratch::new("latin1.pytie", b"new v0 \xe9\n");
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not UTF-8"), "{}", stderr(&o));
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(pytie(&[]).status.code(), Some(2));
    assert_eq!(pytie(&["run"]).status.code(), Some(2));
    assert_eq!(pytie(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        pytie(&["run", "--text", "--binary", "x"]).status.code(),
        Some(2)
    );
}

#[test]
fn any_bytes_are_a_binary_program() {
    let f = Scratch::new(
        "junk.bin",
        &[
            0xff, 0x13, 0x00, 0x77, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03,
        ],
    );
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // The flag overrides the extension: these bytes are not text.
    let o = pytie(&["run", "--text", f.path()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn encode_and_decode_round_trip() {
    let src = "new v0\nhold h1 v0\nweak w1 v0\ndrop v0\nlock v2 w1\nrelease_foreign h1\n";
    let f = Scratch::new("p.pytie", src.as_bytes());
    let bin = f.0.with_extension("bin");
    let o = pytie(&["encode", f.path(), "-o", bin.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let o = pytie(&["decode", bin.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), src);
}

#[test]
fn trace_prints_the_state_after_every_step() {
    let f = Scratch::new("t.pytie", b"new v0\nhold h0 v0\ndrop v0\n");
    let o = pytie(&["trace", f.path()]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("step 3: drop v0"), "{out}");
    assert!(
        out.contains("obj#0    strong 1 weak 1 Inactive(wr#0) x=-"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("pass"));
}

#[test]
fn regress_turns_a_failing_input_into_a_commented_text_program() {
    let f = Scratch::new("found.pytie", b"new v0\nnew v1\nexpect v0 is v1\ndrop v1\n");
    let out = f.0.with_file_name("reg.pytie");
    let o = pytie(&["regress", f.path(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("# Regression: FAIL: failed expectation at step 3"),
        "{text}"
    );
    assert!(
        text.ends_with("new v0\nnew v1\nexpect v0 is v1\n"),
        "{text}"
    );
}

#[test]
fn regress_of_a_passing_input_exits_1_unless_allow_pass() {
    let f = Scratch::new("passes.pytie", b"new v0\ndrop v0\n");
    let out = f.0.with_file_name("reg.pytie");
    let o = pytie(&["regress", f.path(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("this input passes"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");
    let o = pytie(&[
        "regress",
        "--allow-pass",
        f.path(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("# Regression: this input passes now"),
        "{text}"
    );
}

#[test]
fn coverage_counts_programs_per_transition_and_writes_dot() {
    let f = Scratch::new("cov.pytie", b"new v0\nhold h0 v0\ndrop v0\nret v1 h0\n");
    let out = f.0.parent().unwrap().join("picture");
    let o = pytie(&["coverage", f.path(), "-o", out.to_str().unwrap()]);
    let dot = std::fs::read_to_string(out.with_extension("dot")).expect("the DOT file");
    assert!(dot.starts_with("digraph pytie_coverage {"), "{dot}");
    assert!(dot.contains("\"revive: 1 program\\n"), "{dot}");
    assert!(dot.contains("\"untied-free: 0 programs\\n"), "{dot}");
    let text = stdout(&o);
    assert!(text.contains("1 programs (1 files)"), "{text}");
    assert!(text.contains("never taken: "), "{text}");
    // Rendering needs Graphviz's `dot`: without it, exit 2 and say so.
    let has_dot = Command::new("dot").arg("-V").output().is_ok();
    if has_dot {
        assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
        let svg = std::fs::read_to_string(out.with_extension("svg")).expect("the SVG file");
        assert!(svg.contains("<svg"), "{svg}");
    } else {
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("apt-get install graphviz"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn coverage_without_graphviz_still_writes_the_dot_and_exits_2() {
    let f = Scratch::new("nodot.pytie", b"new v0\ndrop v0\n");
    let out = f.0.parent().unwrap().join("picture");
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["coverage", f.path(), "-o", out.to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run pytie");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Graphviz's `dot` is not installed (Debian: apt-get install graphviz)"),
        "{}",
        stderr(&o)
    );
    assert!(out.with_extension("dot").exists());
    assert!(!out.with_extension("svg").exists());
}

#[test]
fn coverage_recurses_directories_and_rejects_bad_paths() {
    let f = Scratch::new("a.pytie", b"new v0\n");
    let dir = f.0.parent().unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/b.bin"), [0u8, 0, 0, 0, 0, 0]).unwrap();
    std::fs::write(dir.join("sub/README.md"), "not a program").unwrap();
    let out = dir.join("out/picture");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let o = pytie(&[
        "coverage",
        dir.join("sub").to_str().unwrap(),
        f.path(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout(&o).contains("2 programs (2 files)"),
        "{}",
        stdout(&o)
    );
    let o = pytie(&["coverage", "/nonexistent/corpus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/corpus: cannot read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_program_past_the_step_limit_exits_2_naming_the_limit() {
    let f = Scratch::new("long.pytie", "new v0\n".repeat(1_000_001).as_bytes());
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("long.pytie:1000001:1: too many steps: a program has at most 1000000 steps"),
        "{err}"
    );
}

#[test]
fn a_long_run_shows_progress_on_standard_error() {
    let f = Scratch::new("progress.pytie", "new v0\n".repeat(9000).as_bytes());
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run", f.path()])
        .env("PYTIE_PROGRESS_MS", "0")
        .output()
        .expect("run pytie");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("step 4096 of 9000 (45%)"), "{err}");
    assert!(err.contains("step 8192 of 9000 (91%)"), "{err}");
    assert!(stdout(&o).starts_with("ok "), "{}", stdout(&o));
}

/// 300 `new v0` steps: more than a binary program holds.
fn long_text() -> String {
    "new v0\n".repeat(300)
}

#[test]
fn encode_refuses_to_drop_steps_unless_truncate() {
    let f = Scratch::new("long300.pytie", long_text().as_bytes());
    let bin = f.0.with_extension("bin");
    let o = pytie(&["encode", f.path(), "-o", bin.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(
            "300 steps, but a binary program holds at most 256: the last 44 (steps 257 to 300"
        ),
        "{err}"
    );
    assert!(!bin.exists(), "nothing written");
    let o = pytie(&[
        "encode",
        "--truncate",
        f.path(),
        "-o",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("the last 44"), "{}", stderr(&o));
    let o = pytie(&["run", bin.to_str().unwrap()]);
    assert!(stdout(&o).contains("(256 steps)"), "{}", stdout(&o));
}

#[test]
fn ignored_binary_bytes_are_named() {
    // Header (every kind, every slot), then 10,000 bytes of steps.
    let mut data = vec![0xff, 0xff, 0xff, 0xff];
    data.extend(std::iter::repeat_n(0u8, 10_000));
    let f = Scratch::new("big.bin", &data);
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("256 steps;")
            && err.contains("trailing bytes ignored: binary programs hold at most 256 steps"),
        "{err}"
    );
    // One byte past a whole step: an incomplete last step, named too.
    let f = Scratch::new("cut.bin", &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let o = pytie(&["decode", f.path()]);
    assert!(
        stderr(&o).contains("an incomplete last step"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn decode_of_an_input_with_no_step_is_an_error() {
    let f = Scratch::new("one.bin", &[7]);
    let o = pytie(&["decode", f.path()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("1 bytes decode to no step"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
}

#[test]
fn pytie_mutant_is_checked_at_start_up() {
    let f = Scratch::new("m.pytie", b"new v0\n");
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run", f.path()])
        .env("PYTIE_MUTANT", "dict-cached")
        .output()
        .expect("run pytie");
    let err = stderr(&o);
    if cfg!(feature = "mutants") {
        assert_eq!(o.status.code(), Some(0), "{err}");
    } else {
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("PYTIE_MUTANT=dict-cached is set, but this build has no mutants (cargo feature `mutants`)"),
            "{err}"
        );
    }
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run", f.path()])
        .env("PYTIE_MUTANT", "no-such-mutant")
        .output()
        .expect("run pytie");
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    if cfg!(feature = "mutants") {
        assert!(
            err.contains("unknown PYTIE_MUTANT \"no-such-mutant\"; one of: fresh-unattached,"),
            "{err}"
        );
    } else {
        assert!(err.contains("this build has no mutants"), "{err}");
    }
}

#[test]
fn scripts_fuzz_rejects_cargo_options_before_building() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fuzz");
    let o = Command::new(script)
        .args(["--features", "mutants"])
        .output()
        .expect("run scripts/fuzz");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("for a mutant: scripts/fuzz --mutant NAME"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(script)
        .arg("--mutant")
        .output()
        .expect("run scripts/fuzz");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--mutant needs a name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_endless_input_is_cut_off_with_an_error() {
    let o = pytie(&["run", "--binary", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/dev/zero: larger than 64 MiB, the most pytie reads"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_text_file_with_a_bom_runs_and_bad_utf8_names_line_and_col() {
    let f = Scratch::new("bom.pytie", b"\xEF\xBB\xBFnew v0\ndrop v0\n");
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let f = Scratch::new("bad.pytie", b"new v0\nnew \xFF\n");
    let o = pytie(&["run", f.path()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.pytie:2:5: not UTF-8 text"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_reads_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pytie"))
            .args(["run", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = run(b"new v0\nhold h0 v0\ndrop v0\nret v1 h0\nexpect strong v1 2\n");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("ok   - (4 steps)"), "{}", stdout(&ok));
    let bad = run(b"new v0\nfrobnicate v0\n");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("-:2:1: unknown step"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn decode_takes_the_backend_whose_inputs_it_reads() {
    // A binary program using weak slots and shutdown: the tvmffi target's
    // decoder reads the same bytes within tvm-ffi's step kinds, which are
    // every kind since `shutdown` runs in a forked child (issue 24): the
    // two decodings are the same.
    let src = Scratch::new(
        "weak.pytie",
        b"new v0\nweak w0 v0\nlock v1 w0\nunweak w0\nshutdown\n",
    );
    let bin = format!("{}.bin", src.path());
    assert_eq!(
        pytie(&["encode", src.path(), "-o", &bin]).status.code(),
        Some(0)
    );
    let full = stdout(&pytie(&["decode", &bin]));
    assert_eq!(
        full,
        "new v0\nweak w0 v0\nlock v1 w0\nunweak w0\nshutdown\n"
    );
    let tvm = pytie(&["decode", "--backend", "tvm-ffi", &bin]);
    assert_eq!(tvm.status.code(), Some(0), "{}", stderr(&tvm));
    assert_eq!(stdout(&tvm), full);
}

#[test]
fn a_fuzz_failure_report_is_kept_for_scripts_fuzz_to_print_last() {
    // scripts/fuzz sets PYTIE_REPORT_FILE and prints the file again after
    // libFuzzer's crash output; the harness writes it before aborting.
    let dir = std::env::temp_dir().join(format!("pytie-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("last-report.txt");
    // SAFETY: this test binary's tests do not read PYTIE_REPORT_FILE
    // concurrently (only this test uses it).
    unsafe { std::env::set_var("PYTIE_REPORT_FILE", &file) };
    pytie::harness::keep_report("FAIL: divergence at step 2: `drop v0`\n");
    unsafe { std::env::remove_var("PYTIE_REPORT_FILE") };
    let kept = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(kept, "FAIL: divergence at step 2: `drop v0`\n");
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fuzz")).unwrap();
    assert!(
        script.contains("export PYTIE_REPORT_FILE=")
            && script.contains("cat \"$PYTIE_REPORT_FILE\"")
    );
}

#[test]
fn sweep_counts_points_and_failed_steps_and_stops_where_allocations_end() {
    let f = Scratch::new(
        "sweep.pytie",
        b"new v0\nnew v1 dict\nset v0 v1\nexpect strong v1 2\ndrop v1\nget v2 v0\n",
    );
    let o = pytie(&["sweep", f.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    // "swept 1 programs: N points (...), M where the step failed ..."
    let nums: Vec<usize> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(out.starts_with("swept 1 programs: "), "{out}");
    let (points, failed, failing) = (nums[1], nums[2], nums[3]);
    // Five steps, each stopped at its first K beyond its allocations, far
    // below 255 each; `new` and the fresh `get` fail at least once each.
    assert!(points > 5 && points < 100, "{out}");
    assert!(failed >= 2 && failed < points, "{out}");
    assert_eq!(failing, 0, "{out}");
    // Twice the same (nothing in the sweep depends on what ran before).
    assert_eq!(
        stdout(&pytie(&["sweep", f.path()])).lines().next(),
        out.lines().next()
    );
}

#[test]
fn sweep_of_nothing_or_a_missing_path_exits_2() {
    let o = pytie(&["sweep", "/nonexistent/pytie"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    let f = Scratch::new("notes.md", b"# not a program\n");
    let dir = std::path::Path::new(f.path())
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let o = pytie(&["sweep", &dir]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
}
