//! The step timeout's settings: a bad value is a usage error (exit 2, a
//! message naming it), never a silent default. (Hangs themselves are
//! exercised with the `foreign-wait-holds-gil` mutant, in a child process:
//! tests/mutants.rs.)

use std::path::Path;
use std::process::Command;

fn pytie_run(args: &[&str], env: Option<(&str, &str)>) -> (Option<i32>, String, String) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/scenarios");
    let file = std::fs::read_dir(file)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pytie"))
        .expect("a scenario");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytie"));
    cmd.arg("run")
        .args(args)
        .arg(&file)
        .env_remove("PYTIE_MUTANT");
    cmd.env_remove("PYTIE_STEP_TIMEOUT");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_step_timeout_is_taken() {
    let (code, out, err) = pytie_run(&["--step-timeout", "5"], None);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = pytie_run(&[], Some(("PYTIE_STEP_TIMEOUT", "0.5")));
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn a_bad_step_timeout_is_a_usage_error() {
    for bad in ["0", "-1", "soon"] {
        let arg = format!("--step-timeout={bad}");
        let (code, _, err) = pytie_run(&[&arg], None);
        assert_eq!(code, Some(2), "{arg}: {err}");
        assert!(err.contains("step timeout"), "{err}");
    }
    let (code, _, err) = pytie_run(&[], Some(("PYTIE_STEP_TIMEOUT", "soon")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("PYTIE_STEP_TIMEOUT"), "{err}");
}

/// Issue 26, "every crash a report": a crash inside a step prints the step
/// and the program up to it, then dies of the same signal (so a fuzzer's or
/// ASan's handler, or the default action, still sees it). This test runs
/// itself again as the crashing child.
#[test]
fn a_crash_in_a_step_prints_the_step_and_the_program() {
    use std::os::unix::process::ExitStatusExt;
    if std::env::var_os("PYTIE_TEST_CRASH_CHILD").is_some() {
        let p =
            pytie_core::program::text::parse("new v0\nhold h0 v0\ndrop v0\nrelease h0\n").unwrap();
        pytie::watchdog::begin_program("crash-test.pytie", &p.ops);
        pytie::watchdog::arm(3);
        // SAFETY: none; the point is a real invalid read, as a faulty
        // library makes one.
        let v = unsafe { std::ptr::read_volatile(std::ptr::dangling::<u64>().wrapping_sub(1)) };
        println!("not reached: {v}");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crash_in_a_step_prints_the_step_and_the_program",
            "--nocapture",
        ])
        .env("PYTIE_TEST_CRASH_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(pytie_asan) {
        // scripts/asan: ASan's SEGV handler, chained to, reports and exits.
        assert!(
            err.contains("AddressSanitizer: SEGV") || out.status.signal() == Some(libc::SIGSEGV),
            "{err}"
        );
    } else {
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{err}");
    }
    assert!(
        err.contains(
            "FAIL: the process is dying of SIGSEGV in step 3: `drop v0` (crash-test.pytie)"
        ),
        "{err}"
    );
    assert!(
        err.contains("new v0\nhold h0 v0\ndrop v0    # <- step 3: dies here\n"),
        "{err}"
    );
    assert!(
        !err.contains("release h0"),
        "only the program up to the step: {err}"
    );
}
