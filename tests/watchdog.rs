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
