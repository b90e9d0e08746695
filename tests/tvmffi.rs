//! The tvm-ffi backend against the real apache-tvm-ffi wheel: the shared
//! corpus replays on it, the recorded upstream findings fail or are refused
//! by their rules, both backends share one process, and `pytie repro
//! --python` scripts run on tvm_ffi alone. The pinned wheel is installed by
//! `scripts/setup-tvmffi` (run here when needed); if that fails, every test
//! here fails with its output.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use pytie::backend::tvmffi::{
    self, CALLBACK_FINDING, CELL_FINDING, CYCLE_FINDING, ERROR_FINDING, FRAME_FINDING,
    KnownFindings, LEAK_FINDING, MOVED_FINDING, PINNED, SETTER_FINDING,
};
use pytie::harness;
use pytie_core::backend::Backend;
use pytie_core::exec::FailureKind;
use pytie_core::program::{Program, StepKind, binary, text};

mod support;
use support::{check_tvmffi as check, load_tvmffi as load, root, shared_corpus};

/// Install the pinned wheel (idempotent, fast once done).
fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let o = Command::new(root().join("scripts/setup-tvmffi"))
            .output()
            .map_err(|e| format!("cannot run scripts/setup-tvmffi: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/setup-tvmffi failed ({}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

#[test]
fn the_pinned_wheel_has_tying_off_and_the_store_leak() {
    setup();
    let (name, tying, version, leak) = harness::with_tvmffi(KnownFindings::Report, |ex| {
        (
            ex.backend.name(),
            ex.backend.tying(),
            ex.backend.version().to_string(),
            ex.backend.leak_per_store(),
        )
    })
    .unwrap();
    assert_eq!(version, PINNED);
    assert!(!tying, "{name}: the published wheels ship tying dormant");
    assert_eq!(leak, 1, "the start-up probe measures {LEAK_FINDING}");
    let model_tying = harness::with_tvmffi(KnownFindings::Report, |ex| ex.model.tying()).unwrap();
    assert!(!model_tying, "the model takes the backend's profile");
}

/// Every text program of the shared corpus and every binary seed (decoded
/// as the `tvmffi` fuzz target does) passes, with the recorded findings
/// worked around or refused; the skipped kinds are exactly those tvm-ffi
/// cannot express.
#[test]
fn the_shared_corpus_replays_on_tvm_ffi() {
    setup();
    let all = shared_corpus();
    assert!(all.len() >= 80, "{} files", all.len());
    let (mut steps, mut skipped, mut refused, mut worked, mut unheld) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for f in &all {
        match check(&load(f), KnownFindings::WorkAround) {
            Ok(o) => {
                // Every step kind runs on tvm-ffi (`oom` too, issue 30).
                assert!(o.skipped.is_empty(), "{}: {:?}", f.display(), o.skipped);
                for (_, why) in &o.refused {
                    assert!(
                        why.contains(MOVED_FINDING)
                            || why.contains(CYCLE_FINDING)
                            || why.contains(ERROR_FINDING)
                            || why.contains(SETTER_FINDING),
                        "{}: {why}",
                        f.display()
                    );
                }
                steps += o.steps;
                skipped += o.skipped.len();
                refused += o.refused.len();
                worked += o.worked_around.len();
                unheld += o.unheld;
            }
            Err(e) => failures.push(format!("{}\n{e}", f.display())),
        }
    }
    println!(
        "tvm-ffi replay: {} files, {steps} steps run, {skipped} skipped, {refused} refused ({MOVED_FINDING}, {CYCLE_FINDING}), {worked} worked \
         around ({LEAK_FINDING}), {unheld} expectations false on the model too (tying off)",
        all.len()
    );
    assert!(
        failures.is_empty(),
        "{} files fail on tvm-ffi:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every step kind runs (`shutdown` in a forked child, issue 24; `oom`,
    // issue 30).
    assert_eq!(skipped, 0);
    assert!(steps > 1000 && refused > 0 && worked > 0 && unheld > 0);
}

#[test]
fn the_store_leak_is_an_upstream_failure_at_the_store() {
    setup();
    let p = load(&root().join(LEAK_FINDING));
    let f = harness::check_tvmffi(&p, KnownFindings::Report)
        .unwrap()
        .expect_err("the leak is reported");
    assert_eq!(f.kind, FailureKind::Upstream);
    assert_eq!(f.step, Some(3), "{f}");
    let report = f.to_string();
    assert!(
        report.contains("upstream failure at step 3: `set v0 v1`"),
        "{report}"
    );
    assert!(
        report.contains("apache-tvm-ffi 0.1.15.post2 breaks the contract"),
        "{report}"
    );
    assert!(
        report.contains("obj#1.strong  2                 3  <--"),
        "{report}"
    );
    // Worked around, it passes, saying so at the store.
    let o = check(&p, KnownFindings::WorkAround).unwrap();
    assert_eq!(o.worked_around.len(), 1);
    assert_eq!(o.worked_around[0].0, 3);
    // A failure leaves the world usable: the next program passes.
    check(
        &load(&root().join("corpus/scenarios/echo-returns-argument-wrapper.pytie")),
        KnownFindings::Report,
    )
    .unwrap();
}

#[test]
fn uses_of_moved_from_objects_are_refused_by_their_rule() {
    setup();
    let p = load(&root().join(MOVED_FINDING));
    let o = check(&p, KnownFindings::Report).unwrap();
    let steps: Vec<usize> = o.refused.iter().map(|(s, _)| *s).collect();
    // get, echo, set (both sides), unset; not hold (a NULL handle is seen
    // first) nor the second move (tvm-ffi raises).
    assert_eq!(steps, [5, 6, 7, 8, 9], "{o:?}");
    for (_, why) in &o.refused {
        assert!(
            why.contains(MOVED_FINDING) && why.contains("SIGSEGV"),
            "{why}"
        );
    }
    // The same program on pytie's runtime: each of those steps gives the
    // error *moved*, none is refused.
    let o = harness::check_lifecycle(&p).unwrap();
    assert!(o.refused.is_empty());
}

#[test]
fn every_step_kind_runs_shutdown_in_a_forked_child() {
    setup();
    // Weak slots run (through the weak count: issue 10.4); `shutdown` runs
    // upstream's atexit hook in a child the harness forks (src/child.rs),
    // and the steps after it run there: every step counted, none skipped.
    let p = text::parse("new v0\nweak w0 v0\nshutdown\nlock v1 w0\nunweak w0\ndrop v0\n").unwrap();
    let o = check(&p, KnownFindings::Report).unwrap();
    assert_eq!(o.steps, 6);
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
    assert!(tvmffi::steps().contains(StepKind::Shutdown));
    // Without the harness's fork (the executor alone) it is refused: this
    // process's interpreter must outlive the program.
    let refused = harness::with_tvmffi(KnownFindings::Report, |ex| ex.run(&p))
        .unwrap()
        .unwrap();
    assert_eq!(refused.refused.len(), 1, "{refused:?}");
    assert!(refused.refused[0].1.contains("forks"), "{refused:?}");
    // What the child counted comes back: an expectation false on both
    // sides after the fork (tying off: unheld, E2).
    let p = text::parse("new v0\nshutdown\nnew v1\nexpect v1 none\n").unwrap();
    let o = check(&p, KnownFindings::Report).unwrap();
    assert_eq!((o.steps, o.unheld), (3, 1), "{o:?}");
}

#[test]
fn a_second_return_is_a_fresh_wrapper_and_the_model_agrees() {
    setup();
    // Strong counts observed through the header: h0 + two wrappers.
    let p = text::parse("new v0\nhold h0 v0\nret v1 h0\nexpect strong v0 3\n").unwrap();
    let o = check(&p, KnownFindings::Report).unwrap();
    assert_eq!(o.unheld, 0);
    // Written for tying on: false on both sides, not judged under tying off.
    let p = text::parse("new v0\nhold h0 v0\nret v1 h0\nexpect v1 is v0\n").unwrap();
    let o = check(&p, KnownFindings::Report).unwrap();
    assert_eq!(o.unheld, 1);
    // A count the model does not predict either: not judged by default
    // (the shared scenarios are written for tying on), a failure when the
    // program asks for strict expectations (`pytie run --strict`).
    let p = text::parse("new v0\nhold h0 v0\nret v1 h0\nexpect strong v0 2\n").unwrap();
    assert_eq!(check(&p, KnownFindings::Report).unwrap().unheld, 1);
    let e = harness::with_tvmffi(KnownFindings::Report, |ex| {
        ex.set_strict_expectations(Some(true));
        let r = ex.run(&p).map_err(|f| f.to_string());
        ex.set_strict_expectations(None);
        r
    })
    .unwrap()
    .unwrap_err();
    assert!(e.contains("failed expectation at step 4"), "{e}");
    assert!(e.contains("the count is 3"), "{e}");
}

#[test]
fn pytie_and_tvm_ffi_share_one_process() {
    setup();
    let p = load(&root().join("corpus/scenarios/one-handle-twenty-generations.pytie"));
    for _ in 0..2 {
        harness::check_lifecycle(&p).unwrap();
        check(&p, KnownFindings::Report).unwrap();
    }
}

#[test]
fn fuzz_inputs_decode_within_the_backend_kinds() {
    setup();
    // Every byte string is a program of tvm-ffi's kinds: none is skipped.
    for seed in 0..64u8 {
        let data: Vec<u8> = (0..96u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(seed.wrapping_mul(11)))
            .collect();
        let o = harness::check_tvmffi(
            &binary::decode_for(&data, tvmffi::steps()),
            KnownFindings::WorkAround,
        )
        .unwrap()
        .unwrap();
        assert!(o.skipped.is_empty(), "{o:?}");
    }
}

/// Issue 30: a callback's argument whose wrapper cannot be allocated is
/// released twice (the object freed under its holder, at the step); worked
/// around in campaigns; reproduced on tvm_ffi alone.
#[test]
fn the_callback_double_release_is_an_upstream_failure_at_the_call() {
    setup();
    let p = load(&root().join(CALLBACK_FINDING));
    let f = harness::check_tvmffi(&p, KnownFindings::Report)
        .unwrap()
        .expect_err("the double release is reported");
    assert_eq!(f.kind, FailureKind::Upstream, "{f}");
    assert_eq!(f.step, Some(5), "{f}");
    let report = f.to_string();
    assert!(
        report.contains("released the callback's argument twice")
            && report.contains(CALLBACK_FINDING),
        "{report}"
    );
    let o = check(&p, KnownFindings::WorkAround).unwrap();
    assert_eq!(o.worked_around.len(), 1, "{o:?}");
    assert!(o.worked_around[0].1.contains(CALLBACK_FINDING), "{o:?}");
    let probe = root().join("scripts/tvmffi-probes/callback-arg-released-twice-on-oom.py");
    let o = Command::new(python()).arg(probe).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("strong count 2 -> 1"), "{out}");
}

/// Issue 30, R20: the same double release reached with no allocation
/// failure, by a wrapper type whose `__new__` raises; reproduced on tvm_ffi
/// alone, with no `oom` (the script `pytie repro --python` writes, and the
/// probe).
#[test]
fn the_callback_double_release_is_reached_by_a_raising_constructor() {
    setup();
    let file = root().join("corpus/upstream/callback-arg-released-twice-on-raising-new.pytie");
    let p = load(&file);
    let f = harness::check_tvmffi(&p, KnownFindings::Report)
        .unwrap()
        .expect_err("the double release is reported");
    assert_eq!(
        (f.kind.clone(), f.step),
        (FailureKind::Upstream, Some(4)),
        "{f}"
    );
    assert!(
        f.to_string()
            .contains("released the callback's argument twice"),
        "{f}"
    );
    let o = check(&p, KnownFindings::WorkAround).unwrap();
    assert_eq!(o.worked_around.len(), 1, "{o:?}");
    let script = pytie_core::repro::python(&p, "the finding", false);
    let path =
        std::env::temp_dir().join(format!("pytie-repro-raising-new-{}.py", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let o = Command::new(python()).arg(&path).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("construction refused, as expected")
            && out.contains("obj#0 has strong 1; the contract expects 2"),
        "{out}"
    );
    let probe = root().join("scripts/tvmffi-probes/callback-arg-released-twice-on-raising-new.py");
    let o = Command::new(python()).arg(probe).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("strong count 3 -> 2"), "{out}");
}

/// Issue 30: CPython 3.11 leaks a reference to the list's wrapper when a
/// cell of tvm_ffi's getitem_helper cannot be allocated (shown at
/// teardown); worked around in campaigns; reproduced in plain CPython.
#[test]
fn the_cpython_cell_leak_is_reported_at_teardown() {
    setup();
    let p = load(&root().join(CELL_FINDING));
    let f = harness::check_tvmffi(&p, KnownFindings::Report)
        .unwrap()
        .expect_err("the leak is reported");
    assert_eq!(
        (f.kind.clone(), f.step),
        (FailureKind::Upstream, None),
        "{f}"
    );
    assert!(
        f.to_string()
            .contains("obj#0.storage  freed             allocated  <--"),
        "{f}"
    );
    let o = check(&p, KnownFindings::WorkAround).unwrap();
    assert_eq!(o.worked_around.len(), 1, "{o:?}");
    assert!(o.worked_around[0].1.contains(CELL_FINDING), "{o:?}");
    let probe = root().join("scripts/tvmffi-probes/cpython-cell-arg-leaks-on-oom.py");
    let o = Command::new(python()).arg(probe).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("refcount of the argument 2 -> 3"), "{out}");
}

/// A recorded finding that crashes the process (SIGSEGV) when an allocation
/// fails on an error path: the backend refuses `step` of `finding` by rule;
/// run into (`PYTIE_TVMFFI_REFUSE_LOST_ERROR=0`), the process dies at that
/// step, which the report names; the probe reproduces it on tvm_ffi alone.
fn assert_lost_error_refused_and_reproduced(finding: &str, step: &str, probe: &str) {
    let p = load(&root().join(finding));
    let o = check(&p, KnownFindings::Report).unwrap();
    assert_eq!(o.refused.len(), 1, "{o:?}");
    assert_eq!(o.refused[0].0, 4, "{o:?}");
    assert!(
        o.refused[0].1.contains(finding) && o.refused[0].1.contains("SIGSEGV"),
        "{o:?}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run", "--backend", "tvm-ffi"])
        .arg(root().join(finding))
        .env("PYTIE_TVMFFI_REFUSE_LOST_ERROR", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    let want = format!("the process is dying of SIGSEGV in step 4: `{step}`");
    assert!(err.contains(&want), "{err}");
    let o = Command::new(python())
        .arg(root().join("scripts/tvmffi-probes").join(probe))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("died of signal 11"), "{out}");
}

/// Issue 30: an allocation failure while a raising callback's error goes
/// to C++ crashes the process: refused by rule, reproduced on tvm_ffi alone.
#[test]
fn the_lost_callback_error_is_refused_and_reproduced() {
    setup();
    assert_lost_error_refused_and_reproduced(
        ERROR_FINDING,
        "call_raise h0",
        "callback-error-lost-on-oom-segfaults.py",
    );
}

/// Issue 30, R20: on the wheel, an allocation failure while a py_class
/// field setter reports that its value's wrapper could not be made crashes
/// the process: refused by rule, reproduced on tvm_ffi alone.
#[test]
fn the_lost_setter_error_is_refused_and_reproduced() {
    setup();
    assert_lost_error_refused_and_reproduced(
        SETTER_FINDING,
        "set v3 v0",
        "field-setter-error-lost-on-oom-segfaults.py",
    );
}

/// Issue 30, R20: CPython 3.11 loses the error a Python function raises
/// when its caller's frame object cannot be allocated (a `fragile` type's
/// `__new__` under `getitem_helper`): reported at the step, worked around
/// as the lost MemoryError, reproduced in plain CPython.
#[test]
fn the_cpython_frame_error_loss_is_reported_and_worked_around() {
    setup();
    let p = load(&root().join(FRAME_FINDING));
    let f = harness::check_tvmffi(&p, KnownFindings::Report)
        .unwrap()
        .expect_err("the lost error is reported");
    assert_eq!(
        (f.kind.clone(), f.step),
        (FailureKind::Upstream, Some(6)),
        "{f}"
    );
    assert!(f.to_string().contains(FRAME_FINDING), "{f}");
    let o = check(&p, KnownFindings::WorkAround).unwrap();
    assert_eq!(o.worked_around.len(), 1, "{o:?}");
    assert!(o.worked_around[0].1.contains(FRAME_FINDING), "{o:?}");
    let probe = root().join("scripts/tvmffi-probes/cpython-frame-error-lost-on-oom.py");
    let o = Command::new(python()).arg(probe).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("SystemError"), "{out}");
}

/// Issue 30: `pytie sweep` on the wheel, recorded findings worked around:
/// the callback scenario's points, some failed with MemoryError, none
/// failing.
#[test]
fn the_sweep_runs_on_the_wheel() {
    setup();
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["sweep", "--backend", "tvm-ffi"])
        .arg(root().join("corpus/scenarios/callback-from-cpp-borrowed-and-moved.pytie"))
        .arg(root().join(CALLBACK_FINDING))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let line = out.lines().last().unwrap_or_default();
    assert!(line.starts_with("swept 2 programs: "), "{out}");
    assert!(line.contains(", 0 failing;"), "{out}");
    let failed: usize = line
        .split("), ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed > 10, "{out}");
}

fn python() -> PathBuf {
    tvmffi::venv_dir().join("bin/python")
}

fn repro(program: &str) -> (Option<i32>, String) {
    // One directory per call: tests run this in parallel threads.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pytie-repro-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("p{}.pytie", program.len()));
    std::fs::write(&src, program).unwrap();
    let script = src.with_extension("py");
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["repro", "--python"])
        .arg(&src)
        .arg("-o")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(python()).arg(&script).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn repro_scripts_run_on_tvm_ffi_alone() {
    setup();
    let leak = std::fs::read_to_string(root().join(LEAK_FINDING)).unwrap();
    let (code, out) = repro(&leak);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("tvm_ffi 0.1.15.post2: tying off"), "{out}");
    assert!(
        out.contains("step 3: set v0 v1\n  FAIL obj#1 has strong 3; the contract expects 2"),
        "{out}"
    );
    assert!(
        out.contains("4 expectation(s) of the contract failed"),
        "{out}"
    );

    let clean = "new v0\nhold h0 v0\ndrop v0\nret v1 h0\necho v2 v1\nclone v3 v2\ncycle v3\n\
                 collect\nmove h1 v1\nhold h2 v1\nrelease_foreign h1\nnew v4 dict\nweak w0 v4\n\
                 drop v4\nlock v5 w0\nunweak w0\nnew v6 legacy\nshutdown\nrelease h2\n";
    let (code, out) = repro(clean);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("step 18: shutdown\n"), "{out}");
    assert!(!out.contains("not expressible"), "{out}");
    assert!(
        out.contains("all expectations of the contract hold"),
        "{out}"
    );
}

/// Issue 30: a program with `oom` reproduces on tvm_ffi alone: the script
/// runs the armed step once per allocation, each failed in turn in a child
/// process, after the backend's warm-up, and judges what each left (§4.4):
/// the callback's double release shows at the first allocation, and a
/// program of steps that fail cleanly passes.
#[test]
fn repro_scripts_sweep_an_armed_step_allocation_by_allocation() {
    setup();
    let finding = std::fs::read_to_string(root().join(CALLBACK_FINDING)).unwrap();
    let (code, out) = repro(&finding);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("warm-up: every step kind on each object kind once"),
        "{out}"
    );
    assert!(
        out.contains("FAIL allocation 1 failed: strong counts [0]; the contract allows [[1], [2]]"),
        "{out}"
    );
    let clean = "new v0\nnew v1 cpp\noom 1\necho v2 v0\noom 1\npickle v3 v0\noom 1\n\
                 new v4 cpp\noom 1\nset v1 v0\noom 1\nunset v1\noom 1\nnew v5 fragile\n";
    let (code, out) = repro(clean);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.matches("allocations was failed in turn").count(),
        6,
        "{out}"
    );
}

#[test]
fn the_cli_runs_tvm_ffi_and_names_the_profile() {
    setup();
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run", "--backend", "tvm-ffi"])
        .arg(root().join(LEAK_FINDING))
        .arg(root().join(MOVED_FINDING))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("model: tying off"), "{out}");
    assert!(out.contains("FAIL: upstream failure at step 3"), "{out}");
    assert!(out.contains("refused step 5: apache-tvm-ffi"), "{out}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn loading_tvm_ffi_keeps_the_processs_sigsegv_handler() {
    setup();
    harness::with_tvmffi(KnownFindings::Report, |_| ()).unwrap();
    // libtvm_ffi.so installs its own handler when loaded; the backend puts
    // the previous one back (Rust's here; libFuzzer's in the fuzz target).
    let owner = tvmffi::sigsegv_handler_owner();
    assert!(
        !owner.contains("tvm_ffi"),
        "the SIGSEGV handler is in {owner}"
    );
}

/// Contract §4.3 E4: after a skipped (`shutdown`) or refused (a use of a
/// moved-from object) step, an `expect` is not judged, even with
/// `--strict`; before it, the same `expect` fails when strict.
#[test]
fn expectations_after_an_unrun_step_are_not_judged() {
    setup();
    let strict = |p: &Program| {
        harness::with_tvmffi(KnownFindings::Report, |ex| {
            ex.set_strict_expectations(Some(true));
            let r = ex.run(p).map_err(|f| f.to_string());
            ex.set_strict_expectations(None);
            r
        })
        .unwrap()
    };
    let judged = text::parse("new v0\nhold h0 v0\nret v1 h0\nexpect v1 is v0\n").unwrap();
    assert!(
        strict(&judged)
            .unwrap_err()
            .contains("failed expectation at step 4")
    );
    // The executor alone refuses `shutdown` on tvm-ffi (it runs only in a
    // forked child): an unrun step.
    let skipped =
        text::parse("new v0\nshutdown\nhold h0 v0\nret v1 h0\nexpect v1 is v0\n").unwrap();
    let o = strict(&skipped).unwrap();
    assert_eq!((o.not_judged, o.unheld, o.refused.len()), (1, 0, 1));
    let refused = text::parse(
        "new v0\nmove h0 v0\nget v1 v0\nnew v2\nhold h1 v2\nret v3 h1\nexpect v3 is v2\n",
    )
    .unwrap();
    let o = strict(&refused).unwrap();
    assert_eq!((o.not_judged, o.refused.len()), (1, 1), "{o:?}");
    let dir = std::env::temp_dir().join(format!("pytie-e4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("e4.pytie");
    std::fs::write(&f, text::print(&refused)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run", "--backend", "tvm-ffi", "--strict"])
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("1 expectations not judged"), "{out}");
}
