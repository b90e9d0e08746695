//! scripts/check-docs (run by .ci/run) passes on the shipped documents and
//! catches each kind of problem it exists for.

use std::process::Command;

mod support;
use support::root;

fn check_docs(files: &[&std::path::Path]) -> (bool, String) {
    let o = Command::new(root().join("scripts/check-docs"))
        .args(files)
        .output()
        .expect("run scripts/check-docs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn the_shipped_documents_check_out() {
    let (ok, out) = check_docs(&[]);
    assert!(ok, "{out}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.lines().count() <= 150, "README.md is over 150 lines");
}

#[test]
fn a_broken_link_an_unknown_command_a_missing_script_and_a_stray_figure_are_caught() {
    let dir = std::env::temp_dir().join(format!("pytie-check-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = dir.join("bad.md");
    std::fs::write(
        &doc,
        "# Bad\n\
         See [the contract](no-such-file.md) and [a heading](#nowhere).\n\
         Run `pytie frobnicate FILE` or `scripts/no-such-script`.\n\
         It ran at 123,457 exec/s here.\n\
         ```\n\
         cargo run --release -- explode\n\
         ```\n",
    )
    .unwrap();
    let (ok, out) = check_docs(&[&doc]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok);
    for want in [
        "bad.md:2: link to no-such-file.md: no such file",
        "bad.md:2: link to #nowhere: no such heading",
        "bad.md:3: `pytie frobnicate`: no such subcommand",
        "bad.md:3: scripts/no-such-script: no such script",
        "bad.md:4: figure `123,457 exec/s` is not in BENCHMARKS.md",
        "bad.md:6: `pytie explode`: no such subcommand",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
}
